"""A synthetic long-video QA benchmark that a tiny model can learn: videos where the answer is in the frames.

Every item is one PyAV-rendered H.264 video (32×32 px, 8 frames/s, 32–256 frames) over a drifting
gradient with grey distractor squares, and one question of a type below. The timeline is cut
into `BINS` = 8 equal bins; every event fills whole bins, so uniform sampling of 8 frames (the
midpoint of each bin) sees each event exactly once, and 16 or 32 frames see it 2 or 4 times.

| type       | question                                                       | format       | chance |
|------------|----------------------------------------------------------------|--------------|--------|
| `needle`   | the colour of the one coloured square (shown in one bin)       | 4 options    | 25 %   |
| `count`    | how many times the screen flashes white (1–4, one bin each)    | short answer | 25 %   |
| `order`    | which of a red and a blue square comes first                   | 2 options    | 50 %   |
| `position` | where a green square moving to one side ends up                | short answer | 25 %   |

Options are listed in a fixed order (the letter is a function of the answer, never of the
question text); answers are drawn uniformly, so a model that ignores the video scores chance.
Annotations are the `synthetic_qa` task's records (MLVU-like: video, question, candidates
(empty for short answers), answer, question_type); `training_jsonl` turns them into LLaVA-style
training records with the evaluation prompt. Splits use disjoint seeds (`SPLIT_SEEDS`); item i
of a split is drawn from `RandomState([split seed, i])` alone, so any item can be re-rendered.

    python -m lvjax.synthetic_qa OUT [--train N] [--val N] [--test N]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from lvjax.eval import render
from lvjax.eval.tasks import LETTERS, Item, get_task, load_items
from lvjax.testing.tiny import default_corpus
from lvjax.video import time_message

SIZE, FPS, BINS = 32, 8, 8
LENGTHS = (32, 64, 128, 256)  # frames per video
SQUARE = 12
GREY = (128, 128, 128)
NEEDLE_COLOURS = ("red", "green", "blue", "yellow")
ORDER_COLOURS = ("red", "blue")
SIDES = ("left", "right", "top", "bottom")
COUNTS = ("1", "2", "3", "4")
QUESTIONS = {
    "needle": "What colour is the square that appears only once?",
    "count": "How many times does the screen flash white?",
    "order": "Which square appears first?",
    "position": "Where does the green square end up?",
}
TYPES = tuple(QUESTIONS)
OPTIONS = {"needle": NEEDLE_COLOURS, "order": ORDER_COLOURS, "count": (), "position": ()}
ANSWERS = {"needle": NEEDLE_COLOURS, "order": ORDER_COLOURS, "count": COUNTS, "position": SIDES}
CHANCE = {t: 1.0 / len(ANSWERS[t]) for t in TYPES}
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


def _frame(k: int, n: int) -> np.ndarray:
    return render.background(k * 64 // n, SIZE)


def _paint(img: np.ndarray, colour, x: int, y: int) -> None:
    img[y:y + SQUARE, x:x + SQUARE] = render.COLOURS[colour] if isinstance(colour, str) else colour


def _xy(rng: np.random.RandomState) -> tuple[int, int]:
    return tuple(int(v) for v in rng.randint(0, SIZE - SQUARE + 1, size=2))


def render_item(qtype: str, rng: np.random.RandomState) -> tuple[np.ndarray, str]:
    """(frames (T, 32, 32, 3) uint8, answer) of one item of `qtype`; every draw comes from `rng`."""
    if qtype not in QUESTIONS:
        raise ValueError(f"question type {qtype!r}: expected one of {', '.join(TYPES)}")
    n = int(LENGTHS[rng.randint(len(LENGTHS))])
    per = n // BINS
    frames = np.stack([_frame(k, n) for k in range(n)])
    bins = list(rng.permutation(BINS))
    answer = ANSWERS[qtype][rng.randint(len(ANSWERS[qtype]))]

    def span(b: int) -> slice:
        return slice(b * per, (b + 1) * per)

    if qtype == "needle":
        b, x, y = bins.pop(), *_xy(rng)
        for f in frames[span(b)]:
            _paint(f, answer, x, y)
    elif qtype == "count":
        # flashes in bins with at least one bin between them: choose from the even or odd bins
        parity = rng.randint(2)
        chosen = rng.permutation(np.arange(parity, BINS, 2))[: int(answer)]
        frames[np.concatenate([np.arange(n)[span(int(b))] for b in chosen])] = 240
        bins = [b for b in bins if b not in chosen and b - 1 not in chosen and b + 1 not in chosen]
    elif qtype == "order":
        first, second = sorted(bins[:2])
        bins = bins[2:]
        other = ORDER_COLOURS[1 - ORDER_COLOURS.index(answer)]
        for b, colour in ((first, answer), (second, other)):
            x, y = _xy(rng)
            for f in frames[span(b)]:
                _paint(f, colour, x, y)
    else:  # position: starts on a random other side, slides there over the video, rests in the last bins
        start = SIDES[(SIDES.index(answer) + 1 + rng.randint(3)) % 4]
        end_bins = 2
        a, e = _side_xy(start, rng), _side_xy(answer, rng)
        for k in range(n):
            t = min(1.0, k / max(1, (BINS - end_bins) * per))
            x, y = (int(round(a[i] + (e[i] - a[i]) * t)) for i in range(2))
            _paint(frames[k], "green", x, y)
    for b in bins[: int(rng.randint(3, 6))]:  # grey distractor squares in free bins
        x, y = _xy(rng)
        for f in frames[span(int(b))]:
            _paint(f, GREY, x, y)
    return frames, answer


def _side_xy(side: str, rng: np.random.RandomState) -> tuple[int, int]:
    lo, hi = 0, SIZE - SQUARE
    mid = int(rng.randint(hi // 3, 2 * hi // 3 + 1))
    return {"left": (lo, mid), "right": (hi, mid), "top": (mid, lo), "bottom": (mid, hi)}[side]


def make_split(out: str, split: str, n: int, *, seed: int | None = None) -> str:
    """Write `out/videos/{split}_NNNNN.mp4` and `out/{split}.json` (n items, types in turn). Returns the path."""
    seed = SPLIT_SEEDS[split] if seed is None else seed
    videos = os.path.join(out, "videos")
    os.makedirs(videos, exist_ok=True)
    rows = []
    for i in range(n):
        qtype = TYPES[i % len(TYPES)]
        frames, answer = render_item(qtype, np.random.RandomState([seed, i]))
        name = f"{split}_{i:05d}.mp4"
        render.write_mp4(os.path.join(videos, name), frames, fps=FPS)
        rows.append({"id": f"{split}_{i:05d}", "video": name, "duration": len(frames) / FPS,
                     "question": QUESTIONS[qtype], "candidates": list(OPTIONS[qtype]), "answer": answer,
                     "question_type": qtype})
    path = os.path.join(out, f"{split}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    return path


def training_jsonl(annotations: str, out: str) -> str:
    """LLaVA-style training records from a split's annotations, with the evaluation prompt and answer text."""
    task = get_task("synthetic_qa")
    rule = task.rule("videochat_flash")
    with open(out, "w", encoding="utf-8") as f:
        for item in load_items(task, annotations):
            f.write(json.dumps({"id": item.id, "video": item.video, "conversations": [
                {"from": "human", "value": "<image>\n" + rule.prompt(item)},
                {"from": "gpt", "value": item.answer}]}) + "\n")
    return out


def corpus() -> list[str]:
    """Lines for the tiny tokenizer: the default corpus, then this benchmark's prompts, time messages
    and answers repeated so that BPE spends its merges on them first (answers become single tokens)."""
    rule = get_task("synthetic_qa").rule("videochat_flash")
    ours = [time_message(n / FPS, k).strip() for n in LENGTHS for k in (8, 16, 32)]
    for t in TYPES:
        item = Item(id=t, video="", question=QUESTIONS[t], options=tuple(OPTIONS[t]), answer="")
        ours += [rule.prompt(item), *LETTERS[: len(OPTIONS[t])], *ANSWERS[t]]
    return list(default_corpus()) + ours * 50


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lvjax.synthetic_qa", description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=0)
    p.add_argument("--val", type=int, default=0)
    p.add_argument("--test", type=int, default=200)
    a = p.parse_args(argv)
    for split in ("train", "val", "test"):
        if getattr(a, split):
            path = make_split(a.out, split, getattr(a, split))
            print(f"{split}: --annotations {path} --videos {a.out}/videos")
            if split == "train":
                print("  training records: " + training_jsonl(path, os.path.join(a.out, "train.jsonl")))


if __name__ == "__main__":
    main()
