#!/usr/bin/env python
"""Benchmark training throughput of a (tiny) config on this machine: step time, tokens/s, frames/s.

    python tools/bench_train.py                       # configs/tiny_text.yaml on generated videos
    python tools/bench_train.py --config configs/xcomp_2b_tiny.yaml --steps 12 --variants remat_policy=none,full

For each variant (a `model.*` key with comma-separated values) the config trains `--steps`
steps (the first `--warmup` are excluded: compilation) with log_every=1, so every step is
synchronised and timed. The data pipeline alone is timed too (examples/s, frames/s), and
every row is printed with its ratio to the first variant measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "tiny_text.yaml"))
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2, help="steps excluded from timing (compilation)")
    p.add_argument("--variants", default="remat_policy=none,full", help="model.KEY=v1,v2,... compared (first = baseline)")
    p.add_argument("--videos", type=int, default=24, help="generated videos (when the config has no data)")
    a = p.parse_args(argv)

    import numpy as np

    from lvjax.train import synthetic
    from lvjax.train.config import load_config
    from lvjax.train.data import TrainIterator
    from lvjax.train.loop import train

    tmp = tempfile.mkdtemp(prefix="bench_train_")
    base = list(a.overrides)
    probe = load_config(a.config, base)
    if probe.data.train_jsonl is None:
        tok = synthetic.make_tokenizer(os.path.join(tmp, "tok"))
        jsonl = synthetic.make_video_qa(os.path.join(tmp, "data"), a.videos, size=max(probe.data.image_size, 32))
        base += [f"data.train_jsonl={jsonl}", f"data.tokenizer={tok}", f"data.media_root={os.path.dirname(jsonl)}"]
    base += [f"train.steps={a.steps}", "train.log_every=1", "train.progress=false", f"checkpoint.every={10 ** 6}"]

    cfg = load_config(a.config, base)
    it = TrainIterator(cfg.data, cfg.train.global_batch)
    next(it)
    t0, n_ex, n_fr = time.perf_counter(), 0, 0
    for _ in range(a.steps):
        b = next(it)
        n_ex += len(b["n_frames"])
        n_fr += int(b["n_frames"].sum())
    dt = time.perf_counter() - t0
    print(f"data pipeline (worker_count={cfg.data.worker_count}): {n_ex / dt:.1f} examples/s, {n_fr / dt:.0f} frames/s")

    key, values = a.variants.split("=", 1)
    rows = []
    for v in values.split(","):
        run = os.path.join(tmp, f"run_{key}_{v}")
        cfg = load_config(a.config, base + [f"model.{key}={v}", f"train.output_dir={run}"])
        out = train(cfg, verbose=False)
        recs = out["steps"][a.warmup:]
        step_t = float(np.median([r["step_time_s"] for r in recs]))
        rows.append((f"{key}={v}", step_t, float(np.median([r["tokens_per_s"] for r in recs])),
                     float(np.median([r["frames_per_s"] for r in recs])), recs[-1]["loss"]))
    import jax

    print(f"{a.config}: global batch {cfg.train.global_batch}, {cfg.train.grad_accum} micro-batches, "
          f"{jax.device_count()} × {jax.devices()[0].device_kind}, median over steps {a.warmup + 1}..{a.steps}")
    print(f"{'variant':>24} {'step ms':>9} {'tokens/s':>10} {'frames/s':>10} {'vs first':>9} {'last loss':>10}")
    for name, st, tps, fps, loss in rows:
        print(f"{name:>24} {st * 1e3:>9.1f} {tps:>10.0f} {fps:>10.1f} {rows[0][1] / st:>8.2f}x {loss:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
