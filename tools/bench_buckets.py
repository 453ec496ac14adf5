"""Frame-count buckets: answering videos of different lengths, bucketed vs one compile per frame count.

A tiny random-weight VideoChat-Flash answers N already-sampled videos whose frame counts are
spread over one bucket (default 33…64 frames, the 64-frame bucket). Baseline in the same run:
the same videos encoded without bucket padding (`encode_frames(bucketed=False)`), which
compiles the ViT, merge, prefill and decode for every new frame count. Prints total seconds,
XLA compilations and the ratio.

    python tools/bench_buckets.py [--videos 6] [--min 33] [--max 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lvjax  # noqa: E402
from lvjax.families.base import Encoded  # noqa: E402
from lvjax.families.videochat_flash import answer as runner  # noqa: E402
from lvjax.testing.tiny import build_tiny_videochat_flash  # noqa: E402

COMPILES = [0]
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _d, **_: COMPILES.__setitem__(0, COMPILES[0] + (event == "/jax/core/compile/backend_compile_duration")))


def _run(model, videos, bucketed: bool) -> tuple[float, int]:
    c0, t0 = COMPILES[0], time.perf_counter()
    for v in videos:
        frames = model.frames(v, fps=2.0)
        if bucketed:
            encoded = model.encode_video(frames)
        else:
            visual, n, sec, _ = runner.encode_frames(model.params, model.config, frames.frames, clip_len=4,
                                                     bucketed=False)
            encoded = Encoded(visual, frames, sec, n_valid=n)
        model.answer_encoded(encoded, "What is shown?", max_new_tokens=4)
    return time.perf_counter() - t0, COMPILES[0] - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--min", type=int, default=33)
    ap.add_argument("--max", type=int, default=64)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    counts = np.linspace(args.min, args.max, args.videos).astype(int)
    videos = [rng.integers(0, 256, (n, 24, 24, 3), np.uint8) for n in counts]
    with tempfile.TemporaryDirectory() as d:
        build_tiny_videochat_flash(d, layers=4, vision=dict(image_size=64, num_hidden_layers=2))
        model = lvjax.load(d)
        t_bucket, c_bucket = _run(model, videos, bucketed=True)  # first: it pays its own compilations
        t_plain, c_plain = _run(model, videos, bucketed=False)
    print(f"{args.videos} videos of {counts.tolist()} frames (tiny model, CPU {jax.devices()[0].device_kind})")
    print(f"  per frame count: {t_plain:7.1f} s, {c_plain:3d} XLA compilations")
    print(f"  bucketed       : {t_bucket:7.1f} s, {c_bucket:3d} XLA compilations")
    print(f"  ratio (per-count / bucketed): time {t_plain / t_bucket:.2f}×, compilations {c_plain / max(c_bucket, 1):.1f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
