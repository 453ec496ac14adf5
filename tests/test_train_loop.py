"""End-to-end training on CPU: the tiny config learns, resumes exactly, keeps frozen params bit-identical."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from lvjax.train import objective, synthetic
from lvjax.train.config import load_config
from lvjax.train.loop import build_spec, train
from lvjax.train.metrics import read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_qa")
    tok = synthetic.make_tokenizer(str(d / "tok"))
    jsonl = synthetic.make_video_qa(str(d / "data"), 12, corrupt=1)
    return [f"data.train_jsonl={jsonl}", f"data.tokenizer={tok}", f"data.media_root={d / 'data'}"]


def _cfg(qa, out, *extra, name="tiny_text"):
    return load_config(str(CONFIGS / f"{name}.yaml"), [*qa, f"train.output_dir={out}", "train.progress=false", *extra])


@pytest.mark.heavy  # CI time (20-minute budget); `make test-all` runs it
def test_tiny_xcomp_twin_learns_on_video_and_frozen_vision_stays_bit_identical(qa, tmp_path):
    """xcomp_2b_tiny: frames → ViT (frozen) → ToMe → projector → LLM with LP-Comp, 30 steps."""
    cfg = _cfg(qa, tmp_path / "run", name="xcomp_2b_tiny")
    assert cfg.model.compression == "xcomp_cosine" and cfg.model.frozen == ["vision/*"]
    out = train(cfg, verbose=False)
    losses = [r["loss"] for r in out["steps"]]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert out["skipped"] >= 1  # the corrupt video was met and skipped
    spec, _ = build_spec(cfg)
    init = nn.unbox(objective.init_params(spec, jax.random.key(cfg.train.seed)))
    final = out["state"]["params"]
    flat_init = jax.tree_util.tree_leaves_with_path(init["vision"])
    flat_final = jax.tree.leaves(final["vision"])
    assert len(flat_init) == len(flat_final) > 0
    for (path, a), b in zip(flat_init, flat_final):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path  # bit-identical
    for tower in ("projector", "llm"):
        changed = [not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(init[tower]), jax.tree.leaves(final[tower]))]
        assert all(changed), tower
    rec = read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in rec] == list(range(1, 31))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "frames_per_s"} <= set(rec[-1])
    assert rec[-1]["frames_per_s"] > 0


def test_kill_and_resume_gives_the_same_losses(qa, tmp_path):
    common = ["train.steps=8", "checkpoint.every=3", "train.log_every=1", "optim.warmup_ratio=0.25"]
    full = train(_cfg(qa, tmp_path / "full", *common), verbose=False)
    # Interrupted after step 5 (no save at 5: the newest checkpoint is step 3), then restarted.
    first = train(_cfg(qa, tmp_path / "cut", *common, "train.stop_after=5"), verbose=False)
    assert first["final_step"] == 5
    from lvjax.cli import main

    assert main(["train", "--config", str(CONFIGS / "tiny_text.yaml"), *qa, f"train.output_dir={tmp_path / 'cut'}",
                 "train.progress=false", *common]) == 0
    rec = read_metrics(str(tmp_path / "cut"))
    resumed = {r["step"]: r["loss"] for r in rec[5:]}
    assert sorted(resumed) == [4, 5, 6, 7, 8]
    ref = {r["step"]: r["loss"] for r in full["steps"]}
    np.testing.assert_allclose([resumed[s] for s in range(4, 9)], [ref[s] for s in range(4, 9)], rtol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in first["steps"]], [ref[s] for s in range(1, 6)], rtol=1e-6)
    # The resumed run's final checkpoint equals the uninterrupted one.
    from lvjax.train.checkpointing import Checkpointer

    cfg = _cfg(qa, tmp_path / "cut", *common)
    ck = Checkpointer(cfg.checkpoint_dir, cfg.checkpoint)
    assert ck.latest_step() == 8
    ck.close()


def test_starts_from_a_pretrained_checkpoint(qa, tmp_path):
    """model.init: an lvjax checkpoint's weights are the starting point (all frozen keeps them)."""
    from lvjax import checkpoint
    from lvjax.families import family_by_name

    cfg = _cfg(qa, tmp_path / "run", "train.steps=1")
    hf = dict(cfg.model.hf_config)
    fam = family_by_name("qwen2")
    spec, _ = build_spec(cfg)
    params = jax.tree.map(np.asarray, nn.unbox(fam.init(spec.model_cfg, jax.random.key(123))))
    checkpoint.save_checkpoint(str(tmp_path / "ckpt"), fam, hf, params, False, None)
    cfg = _cfg(qa, tmp_path / "run", "train.steps=1", "model.frozen=['*']", "model.allow_all_frozen=true",
               f"model.init={tmp_path / 'ckpt'}", "model.hf_config=null")
    out = train(cfg, verbose=False)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(out["state"]["params"])):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.heavy
def test_sigkilled_job_restarts_exactly(qa, tmp_path):
    """A real `lvjax train` process killed with SIGKILL mid-run, then restarted: same losses."""
    import os
    import signal
    import subprocess
    import sys
    import time

    common = ["train.steps=12", "checkpoint.every=2", "train.log_every=1", "optim.warmup_ratio=0.25"]
    ref = {r["step"]: r["loss"] for r in train(_cfg(qa, tmp_path / "full", *common), verbose=False)["steps"]}
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "lvjax.cli", "train", "--config", str(CONFIGS / "tiny_text.yaml"), *qa,
            f"train.output_dir={out}", "train.progress=false", *common]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    deadline = time.time() + 300
    while time.time() < deadline and len(read_metrics(str(out))) < 7 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_metrics(str(out)))
    assert 7 <= done < 12, done
    resumed = train(_cfg(qa, out, *common), verbose=False)
    assert resumed["resumed_from"] is not None and resumed["resumed_from"] >= 4
    got = {r["step"]: r["loss"] for r in resumed["steps"]}
    assert sorted(got) == list(range(resumed["resumed_from"] + 1, 13))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [ref[s] for s in sorted(got)], rtol=1e-6)
