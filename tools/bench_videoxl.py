"""Video-XL prefill cost vs frames: the VST window memory at ratios 2 / 8 / 16 against the dense LLM.

Measured (tiny recorded model, random visual tokens, this machine): wall time of the jitted prefill
of [prefix | video | 61 text tokens] and the compiled temp bytes (`memory_analysis`), for the
window memory (`prefill_video` + `extend_text`) and for the plain causal Qwen2 over the same
expanded prompt (no summaries), with the ratios memory / dense printed per row.
Analytic (real 7B shapes: Qwen2-7B, 144 tokens/frame, windows of 1440): LLM prefill FLOPs and the
KV bytes kept after the video, dense vs ratio r.

    python tools/bench_videoxl.py [--frames 64,256,1024] [--ratios 2,8,16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.families.video_xl import FAMILY, window_plan
from lvjax.families.video_xl.memory import extend_text, prefill_video
from lvjax.models import llm

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "videoxl_original" / "tiny_videoxl"
PREFIX, TEXT = 14, 61


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def temp_bytes(fn, *args) -> int:
    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def measure(cfg, params, frames: int, ratios, repeats: int) -> list[dict]:
    d = cfg.llm.hidden_size
    n = frames * cfg.tokens_per_frame
    rng = np.random.default_rng(0)
    visual = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
    prefix = jnp.asarray(rng.integers(0, 500, (1, PREFIX)), jnp.int32)
    text = jnp.asarray(rng.integers(0, 500, (1, TEXT)), jnp.int32)
    p = params["llm"]

    def dense(p, visual):
        x = jnp.concatenate([llm.embed(p, cfg.llm, prefix), visual[None], llm.embed(p, cfg.llm, text)], axis=1)
        return llm.prefill(p, cfg.llm, x, jnp.ones(x.shape[:2], bool))[0][:, -TEXT:]

    base_t = timed(jax.jit(dense), p, visual, repeats=repeats)
    base_m = temp_bytes(dense, p, visual)
    rows = [{"frames": frames, "mode": "dense", "seconds": base_t, "temp_bytes": base_m}]
    for r in ratios:
        src, vst, nv = (jnp.asarray(a) for a in window_plan(cfg.replace(beacon_ratio=(r,)), n, r).arrays())

        def memory(p, visual, src=src, vst=vst, nv=nv):
            mem, _ = prefill_video(p, prefix, visual, src, vst, nv, cfg=cfg.llm, beacon=cfg.beacon_param)
            return extend_text(p, mem, text, jnp.int32(TEXT), cfg=cfg.llm, beacon=cfg.beacon_param, room=0)[0]

        t = timed(jax.jit(memory), p, visual, repeats=repeats)
        m = temp_bytes(memory, p, visual)
        rows.append({"frames": frames, "mode": f"ratio {r}", "seconds": t, "temp_bytes": m,
                     "time_vs_dense": t / base_t, "temp_vs_dense": m / max(base_m, 1)})
    return rows


def analytic(frames: int, ratio: int | None) -> dict:
    """Qwen2-7B prefill FLOPs (2·params·tokens + attention 4·L·D·Σ keys seen) and KV bytes (bf16) after the video."""
    layers, hidden, kv, hd, n_params = 28, 3584, 4, 128, 7.07e9
    n = frames * 144 + PREFIX
    if ratio is None:
        attn_keys = n * (n + 1) / 2
        tokens, kept = n, n
    else:
        window = 1440
        w = window * (1 + 1 / ratio)
        n_w = -(-frames * 144 // window)
        mem = [PREFIX + i * window / ratio for i in range(n_w)]
        attn_keys = sum(w * m + w * (w + 1) / 2 for m in mem)
        tokens, kept = n * (1 + 1 / ratio), PREFIX + frames * 144 / ratio
    flops = 2 * n_params * tokens + 4 * layers * hidden * attn_keys
    return {"flops": flops, "kv_bytes": kept * layers * 2 * kv * hd * 2}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="64,256,1024")
    ap.add_argument("--ratios", default="2,8,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    hf = json.loads((FIXTURE / "config.json").read_text())
    cfg = FAMILY.with_dtypes(FAMILY.config_from_hf(hf, str(FIXTURE / "config.json")), "float32", "float32")
    import flax.linen as nn

    params = nn.unbox(FAMILY.init(cfg, jax.random.key(0)))
    ratios = [int(r) for r in a.ratios.split(",")]
    rows = []
    print(f"{'frames':>7} {'mode':>9} {'ms':>9} {'temp MiB':>9} {'time/dense':>10} {'temp/dense':>10}")
    for f in (int(x) for x in a.frames.split(",")):
        for r in measure(cfg, params, f, ratios, a.repeats):
            rows.append(r)
            print(f"{r['frames']:>7} {r['mode']:>9} {r['seconds'] * 1e3:>9.1f} {r['temp_bytes'] / 2**20:>9.1f} "
                  f"{r.get('time_vs_dense', 1):>10.3f} {r.get('temp_vs_dense', 1):>10.3f}", flush=True)
    print("\nanalytic, Qwen2-7B (144 tokens/frame, windows of 1440):")
    print(f"{'frames':>7} {'mode':>9} {'PFLOPs':>9} {'KV GiB':>8} {'flops/dense':>11} {'kv/dense':>9}")
    for f in (1024, 4096, 10000):
        base = analytic(f, None)
        for r in (None, *ratios):
            x = analytic(f, r)
            print(f"{f:>7} {'dense' if r is None else f'ratio {r}':>9} {x['flops'] / 1e15:>9.1f} "
                  f"{x['kv_bytes'] / 2**30:>8.2f} {x['flops'] / base['flops']:>11.3f} {x['kv_bytes'] / base['kv_bytes']:>9.4f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
