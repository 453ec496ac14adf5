#!/usr/bin/env python
"""The shipped trained tiny model (`lvjax.load("tiny")`) answering synthetic_qa videos of any length.

Renders `--items` items of `lvjax.synthetic_qa` (types in turn: needle, count, order, position) with
the video length forced to `--length` frames (default 4,096 = 512 s at 8 fps; the benchmark's own
videos are 32–256 frames), then runs `lvjax eval --task synthetic_qa --model tiny` on them at each
of `--frames` sampled frame counts (default 8, the training setting, then 4,096). Prints each
eval summary; per-item outputs are in OUT/res_<frames>_<compression>.jsonl. The model was trained on 8 frames
(128 visual tokens), so 4,096 frames (65,536 visual tokens) is far outside its training
distribution: this shows that it runs, not that it generalises.

    python tools/answer_long_tiny.py --out /tmp/long_tiny --items 2 --frames 8,4096
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", type=int, default=2)
    ap.add_argument("--length", type=int, default=4096, help="frames per rendered video (8 fps)")
    ap.add_argument("--frames", default="8,4096", help="sampled frame counts to answer at")
    ap.add_argument("--seed", type=int, default=100, help="split seed (the demo's fresh videos use 100)")
    ap.add_argument("--compression", help="in-LLM plan, e.g. xcomp_cosine (the stage-2 tuning; default: the config's, none)")
    ap.add_argument("--limit", type=int, help="answer only the first N items")
    args = ap.parse_args(argv)

    from lvjax import synthetic_qa
    from lvjax.cli import main as cli

    synthetic_qa.LENGTHS = (args.length,)  # render_item draws its length from LENGTHS
    ann = os.path.join(args.out, "test.json")
    if not os.path.exists(ann):
        t0 = time.perf_counter()
        synthetic_qa.make_split(args.out, "test", args.items, seed=args.seed)
        print(f"rendered {args.items} videos of {args.length} frames in {time.perf_counter() - t0:.1f} s", flush=True)
    for n in [int(f) for f in args.frames.split(",") if f]:
        t0 = time.perf_counter()
        extra = (["--compression", args.compression] if args.compression else []) + (
            ["--limit", str(args.limit)] if args.limit else [])
        tag = f"{n}_{args.compression or 'config'}"
        rc = cli(["eval", "--task", "synthetic_qa", "--annotations", ann, "--videos", os.path.join(args.out, "videos"),
                  "--out", os.path.join(args.out, f"res_{tag}.jsonl"), "--model", "tiny", "--max-frames", str(n),
                  "--min-frames", str(n), "--fps", str(synthetic_qa.FPS), *extra])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(f"frames {n} ({tag}): eval rc {rc}, {time.perf_counter() - t0:.1f} s, peak RSS so far {peak:.2f} GiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
