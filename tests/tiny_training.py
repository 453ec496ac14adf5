"""Helpers of the family training tests: the CE of recorded logits and a short `lvjax train` run of a
tiny twin config on generated videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvjax.train import synthetic
from lvjax.train.config import load_config
from lvjax.train.loop import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def reference_ce(logits: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Σ next-token CE in float64 numpy: logits (T, V) at j predict labels[j + 1] (−100 = none)."""
    lg = logits[:-1].astype(np.float64)
    target = labels[1:]
    m = target != -100
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    picked = lg[np.arange(len(target)), np.where(m, target, 0)]
    return float(np.sum((lse - picked)[m])), int(m.sum())


def assert_tiny_config_trains(config: str, tmp_path: Path, steps: int = 3, videos: int = 6) -> list[float]:
    """`lvjax train --config configs/<config>` for `steps` steps (constant lr 2e-3) on `videos` generated
    videos: the losses are finite and the last is below the first. Returns the losses."""
    jsonl = synthetic.make_video_qa(str(tmp_path / "data"), videos)
    cfg = load_config(str(CONFIGS / config),
                      [f"data.train_jsonl={jsonl}", f"data.media_root={tmp_path / 'data'}", f"train.steps={steps}",
                       "train.log_every=1", "train.progress=false", f"train.output_dir={tmp_path / 'run'}",
                       "optim.warmup_ratio=0.0", "optim.schedule=constant", "optim.lr=2e-3"])
    losses = [r["loss"] for r in train(cfg, verbose=False)["steps"]]
    assert len(losses) == steps and all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    return losses
