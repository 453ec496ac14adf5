"""Items/s of `lvjax eval` against a plain loop calling `model.answer` per item, in the same process.

    python tools/bench_eval.py [--n 24] [--task mlvu_mc] [--max-frames 8] [--max-new-tokens 4] [--model DIR]

Builds a tiny random-weight VideoChat-Flash (unless --model) and a generated benchmark, warms
both paths up on the first items (compilation), then times the plain loop and the harness over
the same items and prints items/s and the ratio harness / loop (the harness adds prompt
building, parsing, one JSON line per item and the summary).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--task", default="mlvu_mc")
    ap.add_argument("--max-frames", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--model", help="model folder (default: a tiny random-weight VideoChat-Flash)")
    args = ap.parse_args()

    import lvjax
    from lvjax.eval import runner
    from lvjax.eval.synthetic import make_benchmark
    from lvjax.eval.tasks import get_task, load_items, resolve_video

    work = tempfile.mkdtemp(prefix="lvjax-bench-eval-")
    if args.model is None:
        from lvjax.testing.tiny import build_tiny_videochat_flash

        args.model = str(build_tiny_videochat_flash(os.path.join(work, "model")))
    ann = make_benchmark(args.task, os.path.join(work, "bench"), args.n, seed=0)
    videos = os.path.join(work, "bench", "videos")
    model = lvjax.load(args.model)
    task = get_task(args.task)
    rule = task.rule(runner.default_protocol(model))
    items = load_items(task, ann)
    opts = runner.answer_options(max_frames=args.max_frames, max_new_tokens=args.max_new_tokens)
    for it in items:  # warm-up: compile every prompt-length bucket once for both paths
        model.answer(resolve_video(videos, it.video), rule.prompt(it), **opts)

    t0 = time.perf_counter()
    for it in items:
        model.answer(resolve_video(videos, it.video), rule.prompt(it), **opts)
    loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    runner.evaluate(model, args.task, ann, videos, os.path.join(work, "results.jsonl"), options=opts, progress=False)
    harness = time.perf_counter() - t0
    print(f"{args.task}, {len(items)} items, max_frames {args.max_frames}, max_new_tokens {args.max_new_tokens}")
    print(f"  plain answer() loop  {len(items) / loop:7.2f} items/s  ({loop:.2f} s)")
    print(f"  lvjax eval harness   {len(items) / harness:7.2f} items/s  ({harness:.2f} s)")
    print(f"  harness / loop       {loop / harness:7.3f}x throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
