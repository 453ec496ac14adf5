"""Inference dtypes: bf16 by default on GPU/TPU, fp32 on CPU; bf16 logits stay near the fp32 ones."""

from __future__ import annotations

import jax
import numpy as np

import lvjax
from lvjax import api
from tests.hf_qwen2 import make_qwen2


def test_default_dtype_by_backend(monkeypatch):
    for backend, want in (("cpu", "float32"), ("gpu", "bfloat16"), ("tpu", "bfloat16")):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert api.default_dtype() == want


def test_bf16_logits_near_fp32_and_loader_holds_one_parameter(tmp_path):
    torch_model = make_qwen2(str(tmp_path), hidden=64, heads=4, kv_heads=2, layers=4, vocab=512, inter=128, std=0.02)
    ids = np.random.RandomState(0).randint(0, 512, (2, 32))
    fp32 = lvjax.load(str(tmp_path))
    bf16 = lvjax.load(str(tmp_path), dtype="bfloat16")
    assert fp32.config.dtype == "float32" and bf16.config.dtype == "bfloat16"
    assert {str(a.dtype) for a in jax.tree.leaves(bf16.params)} == {"bfloat16"}
    want = torch_model(__import__("torch").tensor(ids)).logits.detach().numpy()
    ref, low = fp32.logits(ids), bf16.logits(ids)
    np.testing.assert_allclose(ref, want, atol=1e-4)
    # bf16 keeps 8 mantissa bits: relative to the logit range the error is a few per cent at most
    # (measured: max |Δ| / max |logit| = 0.0071 here, argmax equal on 98% of rows).
    err = np.abs(low - ref).max() / np.abs(ref).max()
    assert err < 0.03, err
    assert (low.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    report = fp32.load_report
    assert report["parameter_bytes"] == sum(a.nbytes for a in jax.tree.leaves(fp32.params))
    assert report["host_peak_bytes"] < report["parameter_bytes"] / 4, report  # one parameter at a time
    assert isinstance(fp32.params["layers"], tuple) and len(fp32.params["layers"]) == 4
