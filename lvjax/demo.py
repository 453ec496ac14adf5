"""`make demo`: the shipped tiny model (trained by `lvjax train`) answering questions about fresh videos.

Renders new synthetic long videos with PyAV (seeds no split uses), asks each question type of
`lvjax.synthetic_qa` and prints the model's answer beside the right one; then scores a held-out
set with the evaluation harness for no compression, LP-Comp and QC-Comp, with the chance level
and the seconds per stage. `--random` instead runs the pipeline on a random-weight tiny
VideoChat-Flash in the original format (answers are noise; for format checks).

    python -m lvjax.demo [--workdir DIR] [--n 24] [--random]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from lvjax import api
from lvjax import synthetic_qa as sq
from lvjax.eval import render
from lvjax.eval.tasks import Item, get_task
from lvjax.testing.tiny import build_tiny_videochat_flash
from lvjax.tiny_model import SAMPLING, Cell, compare

DEMO_SEED = 100  # fresh videos: not a seed of the train / val / test splits
HELD_OUT = 12  # held-out items scored per setting (the first of the test split)


def ask_fresh(model, work: str, per_type: int = 2, seed: int = DEMO_SEED) -> list[dict]:
    """Render `per_type` new videos per question type and answer them greedily. Returns one dict per question."""
    rule = get_task("synthetic_qa").rule("videochat_flash")
    out = []
    for i in range(per_type * len(sq.TYPES)):
        qtype = sq.TYPES[i % len(sq.TYPES)]
        frames, answer = sq.render_item(qtype, np.random.RandomState([seed, i]))
        path = render.write_mp4(os.path.join(work, f"fresh_{i:02d}.mp4"), frames, fps=sq.FPS)
        options = tuple(sq.OPTIONS[qtype])
        item = Item(id=str(i), video=path, question=sq.QUESTIONS[qtype], options=options,
                    answer="ABCD"[options.index(answer)] if options else answer)
        text, _ = model.answer(path, rule.prompt(item), max_new_tokens=4, **SAMPLING)
        parsed = rule.parse(text, item)
        out.append({"type": qtype, "frames": len(frames), "question": sq.QUESTIONS[qtype], "options": options,
                    "output": text, "parsed": parsed, "answer": item.answer, "correct": parsed == item.answer})
    return out


def held_out(work: str, n: int = HELD_OUT):
    """(cell, summary) for none / LP-Comp / QC-Comp with the shipped `tiny` on the first n test items."""
    cells = (Cell("no compression", "tiny", 8), Cell("LP-Comp (xcomp_cosine)", "tiny", 8, "xcomp_cosine"),
             Cell("QC-Comp: 8 of 32 frames", "tiny", 32, "xcomp_cosine", 8))
    return compare(work, n, cells)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="where the videos and results go (default: a temp dir)")
    ap.add_argument("--n", type=int, default=HELD_OUT,
                    help=f"held-out items per setting (default {HELD_OUT}; 0: the fresh videos only)")
    ap.add_argument("--random", action="store_true", help="a random-weight tiny model instead (pipeline only)")
    args = ap.parse_args(argv)
    if args.n < 0:
        ap.error(f"--n must be 0 or more, not {args.n}")
    work = args.workdir or tempfile.mkdtemp(prefix="lvjax-demo-")
    os.makedirs(work, exist_ok=True)
    if args.random:
        return _random(work)

    t0 = time.perf_counter()
    model = api.load("tiny")
    print(f"lvjax demo — the shipped tiny model ({model.info()['parameters']:,} parameters, trained by `lvjax train`), "
          f"working in {work}")
    for r in ask_fresh(model, work):
        opts = f" [{', '.join(r['options'])}]" if r["options"] else ""
        mark = "right" if r["correct"] else "WRONG"
        print(f"  {r['type']:>8} ({r['frames']:3d} frames) {r['question']}{opts}\n"
              f"           answer {r['output']!r:10} expected {r['answer']!r:8} {mark}")
    print(f"  ({time.perf_counter() - t0:.1f} s so far)")
    if args.n == 0:
        return 0
    print(f"\n  accuracy on the first {args.n} held-out test items (chance: "
          + ", ".join(f"{t} {100 * sq.CHANCE[t]:.0f} %" for t in sq.TYPES) + "):")
    for cell, s in held_out(work, args.n):
        groups = s["groups"]["question_type"]
        per = ", ".join(f"{t} {groups[t]['accuracy']:.0f}" for t in sq.TYPES if t in groups)
        secs = ", ".join(f"{k} {v:.3f}" for k, v in s["seconds"].items() if k != "total")
        print(f"    {cell.label:26} {s['accuracy']:5.1f} % ({per}); {s['visual_tokens']:.0f} visual tokens/layer; "
              f"s/item: {secs}, total {s['seconds'].get('total', 0):.3f}")
    print(f"  total {time.perf_counter() - t0:.1f} s")
    return 0


def _random(work: str) -> int:
    """The pipeline on a random-weight tiny VideoChat-Flash in the original HF format."""
    t0 = time.perf_counter()
    frames, _ = sq.render_item("needle", np.random.RandomState([DEMO_SEED, 0]))
    video = render.write_mp4(os.path.join(work, "synthetic.mp4"), frames, fps=sq.FPS)
    hf_dir = os.path.join(work, "tiny_videochat_flash")
    if not os.path.isdir(hf_dir):
        build_tiny_videochat_flash(hf_dir)
    print(f"lvjax demo --random: a tiny VideoChat-Flash with RANDOM weights in the original HF format: {hf_dir}")
    model = api.load(hf_dir)
    encoded = model.encode_video(video, fps=8.0, max_frames=16, min_frames=16)
    answer, report = model.answer_encoded(encoded, sq.QUESTIONS["needle"], compression="xcomp_cosine", max_new_tokens=16)
    print(f"  answer (noise): {answer!r}\n  report: " + ", ".join(f"{k}={v}" for k, v in report.items()))
    print(f"  total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
