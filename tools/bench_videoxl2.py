"""Video-XL-2 prefill: dense vs chunk-sparse vs chunk-sparse + bi-level, ratios against dense in the same run.

Analytic (real Qwen2.5-7B shapes, no weights), per frame count: the prompt layout of the release
(14 prefix tokens, per group of 4 frames 10 time tokens + 144 visual tokens, a 61-token question), the
allowed attention entries, the kernel blocks the chunk-sparse `Layout` visits (tiles of 128 and 512;
time tokens gathered as the family runs it, and left in place for comparison), the prefill FLOPs (linear
layers + attention over the allowed entries) and, for bi-level, the decoding KV length.

Measured (the tiny recorded model, random visual embeddings, this machine's CPU): wall time of the
jitted prefill up to the first answer token (`runner.generate` with one new token: prefill, for bi-level
also the mixed cache and the suffix re-encoded on it). On CPU long layouts run the blockwise XLA path,
which visits the same blocks as the kernels (512-token tiles).

    python tools/bench_videoxl2.py [--frames 1024 4096] [--tiny-frames 256 1024] [--block 4] [--prev 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from lvjax.convert.table import hf_to_lvjax
from lvjax.families.video_xl2 import FAMILY, modes, runner
from lvjax.families.video_xl2.bilevel import bilevel_plan
from lvjax.families.video_xl2.spans import VisualSpans, synthetic_spans
from lvjax.families.video_xl2.sparse import chunk_layout, chunks, visited_fraction
from lvjax.generate import GenerationConfig

HIDDEN, LAYERS, INTER, HEADS, KV_HEADS, HEAD_DIM = 3584, 28, 18944, 28, 4, 128
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "videoxl2_original" / "tiny_videoxl2"
MODES = {"dense": {"prefill": "dense"}, "chunk_sparse": {}, "chunk_sparse+bilevel": {"decode": "bilevel"}}


def allowed_entries(spans: VisualSpans, block: int, prev: int) -> int:
    """Allowed (i, j) of the chunk-sparse mask, counted per row range (never an L×L array)."""
    n, vs, ve = spans.total_len, spans.visual_start, spans.visual_end
    time_starts = [g.time_start for g in spans.groups]
    n_time = spans.groups[0].time_end - spans.groups[0].time_start
    total = vs * (vs + 1) // 2 + sum(ve + i + 1 for i in range(n - ve))  # prefix rows, suffix rows
    for g in spans.groups:
        total += sum(t + 1 for t in range(g.time_start, g.time_end))  # time rows see everything before
    for start, end, lookback in chunks(spans, block, prev):
        for g in (g for g in spans.groups if start <= g.time_start < end):
            for i in range(g.time_end, g.end):
                earlier_time = sum(n_time for s in time_starts if s < lookback)
                total += vs + earlier_time + (i - lookback + 1)
    return total


def flops(n: int, entries: int) -> float:
    linear = 2 * n * LAYERS * (HIDDEN * (HEADS + 2 * KV_HEADS) * HEAD_DIM + HEADS * HEAD_DIM * HIDDEN + 3 * HIDDEN * INTER)
    return linear + LAYERS * 4 * entries * HEADS * HEAD_DIM


def analytic(frames: int, block: int, prev: int, units: int) -> dict:
    spans = synthetic_spans(frames)
    n = spans.total_len
    dense, sparse = n * (n + 1) // 2, allowed_entries(spans, block, prev)
    gathered, inplace = chunk_layout(spans, block, prev), chunk_layout(spans, block, prev, gather=False)
    plan = bilevel_plan(spans, 4, 4, range(0, 2 * units, 2))
    return {"frames": frames, "tokens": n, "allowed_over_causal": sparse / dense,
            "visited_128": visited_fraction(gathered, 128), "visited_512": visited_fraction(gathered, 512),
            "visited_128_in_place": visited_fraction(inplace, 128), "visited_512_in_place": visited_fraction(inplace, 512),
            "tflops_dense": flops(n, dense) / 1e12, "tflops_chunk_sparse": flops(n, sparse) / 1e12,
            "attention_ratio": dense / sparse, "bilevel_kv": plan.mixed_len, "visual_kv": spans.visual_end}


def tiny_model():
    """(LLMConfig, LLM params) of the recorded tiny checkpoint."""
    cfg = FAMILY.config_from_hf(json.loads((FIXTURE / "config.json").read_text()), str(FIXTURE / "config.json"))
    tensors = load_file(str(FIXTURE / "model.safetensors"))
    rules = FAMILY.rules(cfg)
    params = hf_to_lvjax(tensors, rules, ignore=set(tensors) - {k for r in rules for k in r.hf_keys()})
    return cfg.llm, jax.tree.map(jnp.asarray, params["llm"])


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile (and the block metadata) outside the timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def measure(cfg, params, frames: int, block: int, prev: int, units: int, repeats: int) -> list[dict]:
    """Seconds to the first token of each mode on random embeddings (L, D) of the release's layout."""
    spans = synthetic_spans(frames)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, spans.total_len, cfg.hidden_size)).astype(np.float32))
    seen, rng, gen = jnp.zeros((1, cfg.vocab_size), bool), jax.random.key(0), GenerationConfig(max_new_tokens=1)
    rows = []
    for name, opts in MODES.items():
        mode = modes.resolve(block_size_chosed=block, prev_blocks_num=prev,
                             selected_unit_indices=list(range(0, 2 * units, 2)), **opts)
        layout, plan = modes.layout_and_plan(spans, mode)
        def run(layout=layout, plan=plan):
            return runner.generate(params, x, seen, rng, cfg=cfg, gen=gen, layout=layout, plan=plan,
                                   suffix_start=spans.visual_end)[0]

        rows.append({"frames": frames, "tokens": spans.total_len, "mode": name, "seconds": timed(run, repeats)})
    for r in rows:
        r["time_vs_dense"] = r["seconds"] / rows[0]["seconds"]
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="*", default=[1024, 4096], help="frame counts of the analytic 7B rows")
    ap.add_argument("--tiny-frames", type=int, nargs="*", default=[256, 1024], help="frame counts timed on the tiny model")
    ap.add_argument("--block", type=int, default=4, help="block_size_chosed (groups per chunk)")
    ap.add_argument("--prev", type=int, default=3, help="prev_blocks_num")
    ap.add_argument("--units", type=int, default=8, help="selected units for bi-level (selected_topk of the release)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    out = {"analytic": [], "tiny_cpu": []}
    if args.frames:
        print("analytic, Qwen2.5-7B shapes:")
    for f in args.frames:
        a = analytic(f, args.block, args.prev, args.units)
        out["analytic"].append(a)
        print(f"{f} frames, L={a['tokens']}: allowed/causal {a['allowed_over_causal']:.4f}; visited blocks (of the "
              f"causal ones) 128: {a['visited_128']:.4f}, 512: {a['visited_512']:.4f} (time tokens in place: "
              f"{a['visited_128_in_place']:.4f}, {a['visited_512_in_place']:.4f}); prefill TFLOPs dense "
              f"{a['tflops_dense']:.1f}, chunk-sparse {a['tflops_chunk_sparse']:.1f} "
              f"(x{a['tflops_dense'] / a['tflops_chunk_sparse']:.2f}), attention-only x{a['attention_ratio']:.2f}; "
              f"bi-level KV {a['bilevel_kv']}/{a['visual_kv']} ({a['bilevel_kv'] / a['visual_kv']:.3f}) "
              f"with {args.units} units", flush=True)
    if args.tiny_frames:
        cfg, params = tiny_model()
        print(f"\ntiny model ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}), {jax.default_backend()}, "
              f"prefill to the first token, best of {args.repeats}:")
        print(f"{'frames':>7} {'tokens':>7} {'mode':>21} {'seconds':>9} {'vs dense':>9}")
        for f in args.tiny_frames:
            for r in measure(cfg, params, f, args.block, args.prev, args.units, args.repeats):
                out["tiny_cpu"].append(r)
                print(f"{r['frames']:>7} {r['tokens']:>7} {r['mode']:>21} {r['seconds']:>9.2f} {r['time_vs_dense']:>9.3f}",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
