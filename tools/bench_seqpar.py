#!/usr/bin/env python
"""Per-device prefill memory of the sequence-parallel LLM (docs/scale.md), on simulated CPU devices.

Compiles (does not run) a dense-attention prefill of the tiny VideoChat-Flash LLM (hidden 64,
4 layers, 4 heads / 2 KV heads) on one device and on meshes with a `sequence` axis, and prints
XLA's temporary buffer bytes per device (`compiled.memory_analysis()`): the (S/n)·S score rows
each device keeps, next to the all-gathered K/V. Timings on simulated devices sharing a CPU mean
nothing, so none are printed. The devices are simulated with
XLA_FLAGS=--xla_force_host_platform_device_count (set here unless already given).

    python tools/bench_seqpar.py
    python tools/bench_seqpar.py --lengths 2048 8192 --meshes sequence=8 tensor=2,sequence=4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import lvjax  # noqa: E402
from lvjax.models import llm  # noqa: E402
from lvjax.testing.tiny import build_tiny_videochat_flash  # noqa: E402


def temp_mib(model, length: int) -> float:
    """XLA temporaries (MiB per device) of a dense prefill of `length` tokens under the model's mesh."""
    cfg = dataclasses.replace(model._llm_cfg, attention_impl="dense")
    x = jax.ShapeDtypeStruct((1, length, cfg.hidden_size), jnp.float32)
    valid = jax.ShapeDtypeStruct((1, length), bool)
    with model._sharded():
        compiled = jax.jit(lambda p, x, v: llm.prefill(p, cfg, x, v)[0]).lower(model._llm_params, x, valid).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096], help="prompt lengths in tokens")
    parser.add_argument("--meshes", nargs="+", default=["sequence=4,data=-1", "tensor=2,sequence=4", "sequence=8"],
                        help="meshes over the simulated devices (one device is always the baseline)")
    args = parser.parse_args()
    folder = build_tiny_videochat_flash(tempfile.mkdtemp(), hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128)
    rows = []
    for mesh in [None, *args.meshes]:
        model = lvjax.load(str(folder), mesh=mesh)
        for length in args.lengths:
            rows.append({"mesh": mesh or "one device", "tokens": length, "temp_mib_per_device": round(temp_mib(model, length), 1)})
            print(json.dumps(rows[-1]), flush=True)
    base = {r["tokens"]: r["temp_mib_per_device"] for r in rows if r["mesh"] == "one device"}
    print("\n| mesh | tokens | XLA temporaries MiB / device | vs one device |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['mesh']} | {r['tokens']} | {r['temp_mib_per_device']} | {base[r['tokens']] / r['temp_mib_per_device']:.2f}× less |")


if __name__ == "__main__":
    main()
