"""LLM prefill FLOPs and time with in-LLM visual token compression, against no compression.

Plans compared (each against `none`, measured in the same run):
  none                no drops
  xcomp_cosine        XComp LP-Comp (cosine schedule, 16 -> 1 tokens per frame over 28 layers)
  uniform0_attention  VideoChat-Flash's HF README recipe: layers (4, 18), ratios (1, 0.75, 0.25)

For every frame count (16 visual tokens per frame) plus a text query of --text tokens
(XComp Table E uses 863), it prints
  * analytic prefill FLOPs from the per-layer sequence lengths (`plan.seq_len_at`):
    projections + MLP (2·S·in·out per matmul) and attention QK/AV, counted two ways:
    "causal" (useful work, S(S+1)/2 pairs) and "dense" (the full S×S matrices, what the
    masked dense XLA path actually executes), plus the attention rule's scoring pass;
  * XLA's own count (`jax.jit(...).lower(...).compile().cost_analysis()`) as a cross-check.
    XLA's HLO cost analysis counts a while-loop body once (the layer stack is an nn.scan),
    so the cross-check compiles ONE decoder layer at every distinct sequence length and
    multiplies by the number of layers that see that length (+ the attention-rule scoring);
  * wall-clock prefill time (jitted, first call incl. compile and warm best-of-N) for the
    frame counts in --time-frames (small widths only: the dense attention materialises
    Hq·S² fp32 logits, 4.8 GB per layer at 1024 frames with 4 heads).
Then the same analytic ratios for the real VideoChat-Flash-2B LLM (Qwen2.5-1.5B shapes) at
1k/2k/4k frames, next to XComp's paper Table E (43 -> 20, 132 -> 58, 448 -> 187 TFLOPs).

    python tools/bench_compression.py                         # hidden 256, 28 layers, time 256 frames
    python tools/bench_compression.py --time-frames 256,1024  # needs ~16 GB free RAM
    python tools/bench_compression.py --no-time               # FLOPs only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

PLANS = ("none", "xcomp_cosine", "uniform0_attention")
VCF_RECIPE = dict(layers=(4, 18), ratios=(1.0, 0.75, 0.25))
PAPER_TABLE_E = {1024: (43, 20, 0.22, 0.12), 2048: (132, 58, 0.54, 0.25), 4096: (448, 187, 1.56, 0.66)}
QWEN25_15B = dict(hidden=1536, heads=12, kv_heads=2, head_dim=128, inter=8960, layers=28)


@dataclasses.dataclass(frozen=True)
class Dims:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    layers: int


def build(name: str, layers: int):
    from lvjax.families.videochat_flash.compression import build_plan

    return build_plan(name, layers, 16, **(VCF_RECIPE if name != "xcomp_cosine" and name != "none" else {}))


def layer_flops(d: Dims, s: int) -> dict:
    """FLOPs (2 per multiply-add) of one decoder layer over s tokens, batch 1."""
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    linear = 2 * s * d.hidden * (q + 2 * kv) + 2 * s * q * d.hidden + 3 * 2 * s * d.hidden * d.inter
    return dict(linear=linear,
                causal=2 * 2 * q * s * (s + 1) // 2,  # QK^T and AV over the causal triangle
                dense=2 * 2 * q * s * s)               # the full S x S matrices


def select_flops(d: Dims, s: int) -> int:
    """The attention rule's scoring pass (next layer's q/k projections + dense QK^T)."""
    return 2 * s * d.hidden * (d.heads + d.kv_heads) * d.head_dim + 2 * d.heads * d.head_dim * s * s


def plan_lengths(plan, n_text: int, n_visual: int) -> list[int]:
    return [plan.seq_len_at(i, n_text, n_visual) for i in range(plan.num_layers)]


def analytic(d: Dims, plan, n_text: int, n_visual: int) -> dict:
    lengths = plan_lengths(plan, n_text, n_visual)
    tot = dict(linear=0, causal=0, dense=0, select=0)
    for s in lengths:
        for k, v in layer_flops(d, s).items():
            tot[k] += v
    for e in plan.events:
        if e.rule == "attention":
            tot["select"] += select_flops(d, plan.seq_len_at(e.after - 1, n_text, n_visual))
    tot["causal_total"] = tot["linear"] + tot["causal"] + tot["select"]
    tot["dense_total"] = tot["linear"] + tot["dense"] + tot["select"]
    tot["lengths"] = lengths
    return tot


def _cost_flops(compiled) -> float | None:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    return None if not ca or "flops" not in ca else float(ca["flops"])


def xla_flops(params, cfg, plan, n_text: int, n_visual: int, cache: dict, prefix: int = 14) -> float | None:
    """XLA cost analysis per distinct sequence length (one layer compiled), times layer counts."""
    import jax
    import jax.numpy as jnp

    from lvjax.models import llm
    from lvjax.models.qwen2 import causal_mask, positions_from_valid

    layer0 = jax.tree.map(lambda a: a[:1], params["layers"])
    one = {"layers": layer0}
    total = 0.0
    for s in plan_lengths(plan, n_text, n_visual):
        if s not in cache:
            def f(p, x):
                valid = jnp.ones(x.shape[:2], bool)
                return llm.run_layers(p, cfg, x, causal_mask(valid), positions_from_valid(valid), 0, 1)[0]
            x = jax.ShapeDtypeStruct((1, s, cfg.hidden_size), jnp.float32)
            cache[s] = _cost_flops(jax.jit(f).lower(one, x).compile())
        if cache[s] is None:
            return None
        total += cache[s]
    for e in plan.events:
        if e.rule == "attention":
            from lvjax.families.videochat_flash.drops import KeepTopAttention

            s = plan.seq_len_at(e.after - 1, n_text, n_visual)
            nv = plan.count_before(e, n_visual)
            sel = KeepTopAttention(cfg, plan.keep_count(e, n_visual))
            lp = jax.tree.map(lambda a: a[0], params["layers"])

            def g(p, x, sel=sel, nv=nv):
                valid = jnp.ones(x.shape[:2], bool)
                query = jnp.zeros(x.shape[:2], bool).at[:, -1].set(True)
                return sel(x, valid, positions_from_valid(valid), query, p, prefix, nv)
            x = jax.ShapeDtypeStruct((1, s, cfg.hidden_size), jnp.float32)
            total += _cost_flops(jax.jit(g).lower(lp, x).compile()) or 0.0
    return total


def small_model(args):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from lvjax.config import LLMConfig
    from lvjax.models.qwen2 import Qwen2

    cfg = LLMConfig(vocab_size=1024, hidden_size=args.hidden, intermediate_size=args.inter,
                    num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads)
    params = nn.unbox(Qwen2(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"])
    return cfg, params


def time_prefill(params, cfg, plan, n_text: int, n_visual: int, prefix: int, repeats: int) -> tuple[float, float]:
    import jax
    import jax.numpy as jnp

    from lvjax.families.videochat_flash.drops import drops_for_plan
    from lvjax.models import llm

    drops = drops_for_plan(plan, cfg, n_visual)
    s = n_text + n_visual

    @jax.jit
    def run(p, x, valid):
        h = llm.prefill(p, cfg, x, valid, drops=drops, visual_start=prefix, n_visual=n_visual)[0]
        return h[:, -1]

    x = jax.random.normal(jax.random.key(1), (1, s, cfg.hidden_size), jnp.float32)
    valid = jnp.ones((1, s), bool)
    t0 = time.perf_counter()
    run(params, x, valid).block_until_ready()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(params, x, valid).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return first, best


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--frames", default="256,1024,4096", help="frame counts for FLOPs (default: %(default)s)")
    ap.add_argument("--time-frames", default="256", help="frame counts also timed (default: %(default)s)")
    ap.add_argument("--no-time", action="store_true", help="FLOPs only")
    ap.add_argument("--no-xla", action="store_true", help="skip the XLA cost-analysis cross-check")
    ap.add_argument("--text", type=int, default=863, help="text tokens of the query (default: %(default)s, Table E)")
    ap.add_argument("--prefix", type=int, default=14, help="text tokens before the video (default: %(default)s)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--inter", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="warm runs; the best is shown (default: %(default)s)")
    args = ap.parse_args(argv)

    import jax

    frames = _ints(args.frames)
    timed = [] if args.no_time else _ints(args.time_frames)
    cfg, params = small_model(args)
    d = Dims(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
             cfg.intermediate_size, cfg.num_hidden_layers)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); small LLM hidden {d.hidden}, "
          f"{d.layers} layers, {d.heads} heads / {d.kv_heads} KV (head_dim {d.head_dim}), MLP {d.inter}, fp32, batch 1; "
          f"text {args.text} tokens ({args.prefix} before the video), 16 visual tokens per frame")
    plans = {n: build(n, d.layers) for n in PLANS}
    print("visual tokens per layer at 1024 frames:")
    for n, p in plans.items():
        print(f"  {n:<19} {list(p.visual_counts(1024 * 16))}")

    cache: dict = {}
    hdr = (f"{'frames':>6} {'plan':<19}{'GFLOP causal':>13}{'ratio':>7}{'GFLOP dense':>12}{'ratio':>7}"
           f"{'XLA GFLOP':>11}{'XLA/dense':>10}{'first s':>9}{'warm s':>9}{'ratio':>7}")
    print("\n" + hdr)
    for f in frames:
        nv = 16 * f
        base = None
        for name, plan in plans.items():
            a = analytic(d, plan, args.text, nv)
            xf = None if args.no_xla else xla_flops(params, cfg, plan, args.text, nv, cache, args.prefix)
            tf = tw = None
            if f in timed:
                tf, tw = time_prefill(params, cfg, plan, args.text, nv, args.prefix, args.repeats)
            if base is None:
                base = (a, tw)
            row = (f"{f:>6} {name:<19}{a['causal_total'] / 1e9:>13.1f}{a['causal_total'] / base[0]['causal_total']:>7.3f}"
                   f"{a['dense_total'] / 1e9:>12.1f}{a['dense_total'] / base[0]['dense_total']:>7.3f}")
            row += f"{xf / 1e9:>11.1f}{xf / a['dense_total']:>10.3f}" if xf else f"{'-':>11}{'-':>10}"
            if tw is not None:
                row += f"{tf:>9.2f}{tw:>9.2f}{tw / base[1]:>7.3f}"
            print(row, flush=True)

    # The real VideoChat-Flash-2B LLM, analytic only.
    big = Dims(**QWEN25_15B)
    bplans = {n: build(n, big.layers) for n in PLANS}
    print(f"\nVideoChat-Flash-2B LLM (Qwen2.5-1.5B: hidden {big.hidden}, {big.layers} layers, {big.heads}/{big.kv_heads} heads, "
          f"MLP {big.inter}), text {args.text} tokens, analytic TFLOPs (2 FLOPs per multiply-add)")
    print(f"{'frames':>6} {'plan':<19}{'causal':>9}{'ratio':>7}{'dense':>9}{'ratio':>7}{'dense MACs':>11}"
          f"{'paper TFLOPs':>13}{'paper ratio':>12}")
    for f in (1024, 2048, 4096):
        nv = 16 * f
        res = {n: analytic(big, p, args.text, nv) for n, p in bplans.items()}
        b = res["none"]
        for n, a in res.items():
            paper = ""
            if f in PAPER_TABLE_E and n in ("none", "xcomp_cosine"):
                pv = PAPER_TABLE_E[f][0 if n == "none" else 1]
                paper = f"{pv:>13}{pv / PAPER_TABLE_E[f][0]:>12.3f}"
            print(f"{f:>6} {n:<19}{a['causal_total'] / 1e12:>9.1f}{a['causal_total'] / b['causal_total']:>7.3f}"
                  f"{a['dense_total'] / 1e12:>9.1f}{a['dense_total'] / b['dense_total']:>7.3f}"
                  f"{a['dense_total'] / 2e12:>11.1f}{paper}")
    print("paper Table E (H200, LLM only): VideoChat-Flash vs XComp latency 0.22/0.12 s (1k), 0.54/0.25 s (2k), "
          "1.56/0.66 s (4k)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
