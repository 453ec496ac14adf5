"""Needle in a haystack: `lvjax make-benchmark niah` and the depth × length accuracy heatmap.

A haystack (rendered, or the frames of `--haystack FILE`) gets needle clips: `needle_len`
identical frames of a coloured shape on white, starting at frame round(depth · (T − needle_len)).
Single hop: "Which coloured shape appears in the video?" Multi-hop (VideoChat-Flash's chained
needles): needle k shows a shape and the text "find the frame of the <next shape>", the first
says START, the last shows "the number is N"; the question asks for N. The answer needle sits
at the item's depth, the others at other free positions. Records are MLVU-format (video,
question, candidates, answer, question_type) plus depth, needle_len, hops and needle_frames
(frame indices per needle, in chain order).
"""

from __future__ import annotations

import itertools
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lvjax.config import ConfigError
from lvjax.eval import render
from lvjax.eval.synthetic import _dump
from lvjax.video import decode_all_frames

SHAPES = ("square", "circle", "triangle", "cross")
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LENGTHS = (1, 2, 4)
SINGLE_Q = "Which coloured shape appears in the video?"
MULTI_Q = ("Start from the frame that says START and follow the chain of 'find the frame of ...' hints. "
           "What number is shown in the last frame of the chain?")


def needle_image(colour: str, shape: str, size: int, text: str = "") -> np.ndarray:
    """uint8 (size, size, 3): a coloured shape on white, with an optional caption (PIL's default font)."""

    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    c, r = size // 2, size // 4
    fill = render.COLOURS[colour]
    if shape == "square":
        draw.rectangle([c - r, c - r, c + r, c + r], fill=fill)
    elif shape == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(c, c - r), (c - r, c + r), (c + r, c + r)], fill=fill)
    else:
        draw.rectangle([c - r, c - r // 3, c + r, c + r // 3], fill=fill)
        draw.rectangle([c - r // 3, c - r, c + r // 3, c + r], fill=fill)
    if text:
        draw.text((2, 2), text, fill=(0, 0, 0))
    return np.asarray(img)


def _haystack(path: str | None, frames: int, size: int) -> list[np.ndarray]:
    if path is None:
        return [render.background(k, size) for k in range(frames)]


    decoded = decode_all_frames(path)
    return [np.asarray(Image.fromarray(f).resize((size, size))) for f in decoded]


def _positions(rng, total: int, length: int, depth: float, hops: int) -> list[int]:
    """Start frames of the needles in chain order; the last (the answer) at `depth`, the others free."""
    last = round(depth * (total - length))
    apart = lambda s, t: s + length <= t or s >= t + length  # noqa: E731
    free = [s for s in range(total - length + 1) if apart(s, last)]
    others = []
    for _ in range(hops - 1):
        if not free:
            raise ConfigError(f"the haystack ({total} frames) has no room for {hops} needles of {length} frames")
        s = free[rng.randint(len(free))]
        others.append(s)
        free = [f for f in free if apart(f, s)]
    return others + [last]


def make_niah(out: str, n: int, seed: int = 0, *, haystack: str | None = None, frames: int = 64, fps: int = 8,
              size: int = 128, depths: Sequence[float] = DEPTHS, lengths: Sequence[int] = LENGTHS,
              hops: Sequence[int] = (1, 3)) -> str:
    """Write `out/annotations.json` and `out/videos/niah_XXX.mp4`; item i takes the grid cell i mod |grid|."""

    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    base = _haystack(haystack, frames, size)
    if len(base) < 2 * max(lengths) * max(hops):
        raise ConfigError(f"{haystack or 'haystack'}: {len(base)} frames are too few for the needles")
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    grid = list(itertools.product(depths, lengths, hops))
    rows = []
    for i in range(n):
        depth, length, h = grid[i % len(grid)]
        picks = [(list(render.COLOURS)[c], SHAPES[s]) for c, s in
                 (divmod(int(j), len(SHAPES)) for j in rng.permutation(len(render.COLOURS) * len(SHAPES))[:max(h, 4)])]
        starts = _positions(rng, len(base), length, depth, h)
        video = [f.copy() for f in base]
        if h == 1:
            needles = [needle_image(*picks[0], size)]
            options = [f"{c} {s}" for c, s in picks[:4]]
            answer, question, qtype = options[0], SINGLE_Q, "single_hop"
        else:
            numbers = [str(x) for x in rng.permutation(90)[:4] + 10]
            texts = ["START " if k == 0 else "" for k in range(h)]
            texts = [t + (f"find the frame of the {' '.join(picks[k + 1])}" if k < h - 1 else f"the number is {numbers[0]}")
                     for k, t in enumerate(texts)]
            needles = [needle_image(*picks[k], size, texts[k]) for k in range(h)]
            options, answer, question, qtype = numbers, numbers[0], MULTI_Q, "multi_hop"
        order = rng.permutation(len(options))
        options = [options[j] for j in order]
        needle_frames = []
        for start, img in zip(starts, needles):
            for k in range(start, start + length):
                video[k] = img
            needle_frames.append(list(range(start, start + length)))
        name = f"niah_{i:03d}.mp4"
        render.write_mp4(os.path.join(out, "videos", name), video, fps=fps)
        rows.append({"video": name, "duration": len(video) / fps, "question": question, "candidates": options,
                     "answer": answer, "question_type": qtype, "depth": depth, "needle_len": length, "hops": h,
                     "needle_frames": needle_frames})
    return _dump(os.path.join(out, "annotations.json"), rows)


def write_heatmap(rows: Sequence[dict], results: str) -> str | None:
    """Depth × needle-length accuracy PNG beside `results` (RESULTS.niah.png); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scored = [r for r in rows if not r.get("error")]
    depths = sorted({float(r["groups"]["depth"]) for r in scored})
    lengths = sorted({int(r["groups"]["needle_len"]) for r in scored})
    acc = np.full((len(depths), len(lengths)), np.nan)
    for a, d in enumerate(depths):
        for b, length in enumerate(lengths):
            cell = [r["correct"] for r in scored if float(r["groups"]["depth"]) == d and int(r["groups"]["needle_len"]) == length]
            if cell:
                acc[a, b] = 100.0 * sum(cell) / len(cell)
    root = results[: -len(".jsonl")] if results.endswith(".jsonl") else results
    path = root + ".niah.png"
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.6 * len(depths) + 1.5))
    im = ax.imshow(acc, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("needle length (frames)")
    ax.set_ylabel("depth")
    for a, b in itertools.product(range(len(depths)), range(len(lengths))):
        if not np.isnan(acc[a, b]):
            ax.text(b, a, f"{acc[a, b]:.0f}", ha="center", va="center")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return os.path.basename(path)
