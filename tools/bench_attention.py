#!/usr/bin/env python
"""Benchmark the block-sparse attention kernels against dense attention.

For each length (default 16k, 64k, 256k tokens) and layout (video segments of 512 tokens
between a shared prefix and a question), reports the visited key blocks against the dense
(all blocks) and causal counts, the host metadata build time, and on an accelerator:
forward and forward+backward time of the block-sparse kernel, of dense masked XLA attention
(lvjax.attention.attend, only up to --dense-max tokens) and of jax.nn.dot_product_attention
(cuDNN, causal; GPU only), with TFLOP/s counted on the visited blocks only.

On CPU it checks correctness at a small size in Pallas interpret mode and reports the block
counts; kernel timings there would be meaningless (interpret mode) and are not printed.
`--cpu-compare` instead times blockwise XLA attention against dense masked XLA attention (the
two CPU paths of `attend`) and reports XLA's temporary buffer bytes and the compile time of each,
with dense/blockwise ratios (dense is only run while its temporaries fit `--dense-max-gib`).

    python tools/bench_attention.py --help
    python tools/bench_attention.py                       # CPU: block counts + check
    python tools/bench_attention.py --cpu-compare --lengths 2048 8192 32768 --heads 4 --kv-heads 2 --head-dim 64
    python tools/bench_attention.py --heads 16 --kv-heads 2 --head-dim 128   # on a GPU/TPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kernels_pallas.block_sparse import layout as L  # noqa: E402
from kernels_pallas.block_sparse.api import DEFAULT_BLOCKS, block_sparse_attention  # noqa: E402
from kernels_pallas.block_sparse.block_info import block_info  # noqa: E402
from kernels_pallas.block_sparse.reference import reference_from_layout  # noqa: E402


def make_layout(kind: str, n_tokens: int, segment: int, prefix: int, suffix: int) -> L.Layout:
    """A video-like layout of exactly n_tokens: prefix, 512-token segments, question."""
    n_seg = max(1, (n_tokens - prefix - suffix) // segment)
    rest = n_tokens - prefix - suffix - n_seg * segment
    segs = [segment] * n_seg
    segs[-1] += rest
    if kind == "segment_local":  # XComp-style: each segment sees the prefix and itself
        return L.segmented(prefix, segs, suffix, segment_causal=False, prev=0)
    if kind == "segment_local_causal":
        return L.segmented(prefix, segs, suffix, segment_causal=True, prev=0)
    if kind == "chunk_sparse":  # Video-XL-2: causal, own chunk + previous 3 chunks
        return L.segmented(prefix, segs, suffix, segment_causal=True, prev=3)
    if kind == "causal":
        return L.causal(n_tokens)
    if kind == "answer":  # the LLM prefill: [prefix + visual][64 padding slots][question], causal
        from lvjax.models.llm import causal_layout

        return causal_layout(n_tokens, (n_tokens - suffix - 64, n_tokens - suffix))
    raise ValueError(kind)


def _time(fn, *args, iters: int) -> float:
    """Median seconds of a jitted call (after one warm-up/compile call)."""
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _inputs(b, t, hq, hkv, d, dtype, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(ks[0], (b, t, hq, d), dtype)
    k = jax.random.normal(ks[1], (b, t, hkv, d), dtype)
    v = jax.random.normal(ks[2], (b, t, hkv, d), dtype)
    return q, k, v


def check_small(args) -> dict:
    """Interpret-mode correctness of both kernels against the dense reference."""
    lay = make_layout("chunk_sparse", args.check_len, 96, 40, 30)
    q, k, v = _inputs(1, lay.length, 4, 2, 32, jnp.float32, seed=1)
    ro, rl = reference_from_layout(q, k, v, lay)
    res = {}
    for backend in ("tpu", "gpu"):
        out, lse = block_sparse_attention(q, k, v, lay, backend=backend, block_q=64, block_kv=64, interpret=True)
        fin = np.isfinite(np.asarray(rl))
        res[backend] = {
            "max_abs_err_out": float(jnp.abs(out - ro).max()),
            "max_abs_err_lse": float(np.abs(np.asarray(lse)[fin] - np.asarray(rl)[fin]).max()),
        }
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[16384, 65536, 262144], help="token counts")
    p.add_argument("--layouts", nargs="+", default=["segment_local", "chunk_sparse"],
                   choices=["segment_local", "segment_local_causal", "chunk_sparse", "causal", "answer"])
    p.add_argument("--segment", type=int, default=512, help="video segment length (tokens)")
    p.add_argument("--prefix", type=int, default=256, help="shared prefix tokens (global)")
    p.add_argument("--suffix", type=int, default=256, help="question tokens (see everything)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16, help="query heads")
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--block-q", type=int, default=None, help="default: 512 on TPU, 64 on GPU")
    p.add_argument("--block-kv", type=int, default=None)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--no-backward", action="store_true", help="time the forward only")
    p.add_argument("--dense-max", type=int, default=16384, help="largest length for the dense XLA baseline")
    p.add_argument("--check-len", type=int, default=700, help="length of the interpret-mode correctness check")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--interpret", choices=["tpu", "gpu"], default=None,
                   help="CPU smoke test of the timing path: run that kernel in interpret mode "
                        "(the times measure the interpreter, not the kernel)")
    p.add_argument("--cpu-compare", action="store_true", help="blockwise vs dense XLA attention (time, temp bytes)")
    p.add_argument("--dense-max-gib", type=float, default=4.0, help="--cpu-compare: run dense only below this")
    args = p.parse_args(argv)
    if args.cpu_compare:
        return compare_xla(args)

    platform = jax.default_backend()
    backend = {"tpu": "tpu", "gpu": "gpu"}.get(platform) or args.interpret
    blocks = DEFAULT_BLOCKS[backend or "tpu"]
    bq, bk = args.block_q or blocks[0], args.block_kv or blocks[1]
    dtype = jnp.dtype(args.dtype)
    results = {"platform": platform, "device": str(jax.devices()[0]), "block_q": bq, "block_kv": bk,
               "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim, "dtype": args.dtype,
               "rows": []}
    print(f"platform={platform} device={jax.devices()[0]} blocks=({bq},{bk}) B={args.batch} Hq={args.heads} "
          f"Hkv={args.kv_heads} D={args.head_dim} {args.dtype}")
    if args.interpret:
        print(f"INTERPRET MODE ({args.interpret} kernel on {platform}): times below are not kernel performance")
    if platform not in ("tpu", "gpu"):
        chk = check_small(args)
        results["check"] = chk
        print(f"interpret-mode check at {args.check_len} tokens (fp32): " +
              ", ".join(f"{b}: out err {r['max_abs_err_out']:.1e}, lse err {r['max_abs_err_lse']:.1e}"
                        for b, r in chk.items()))

    hdr = f"{'layout':22s} {'tokens':>8s} {'visited':>9s} {'dense':>9s} {'causal':>9s} {'vis/dense':>9s} {'meta s':>7s}"
    if backend:
        hdr += f" {'fwd ms':>8s} {'TF/s':>6s} {'f+b ms':>8s} {'TF/s':>6s} {'xla f ms':>9s} {'xla f+b':>8s}"
        hdr += f" {'cudnn f':>8s} {'cudnn f+b':>9s}"
    print(hdr)
    b, hq, hkv, d = args.batch, args.heads, args.kv_heads, args.head_dim
    for kind in args.layouts:
        for n in args.lengths:
            lay = make_layout(kind, n, args.segment, args.prefix, args.suffix)
            t0 = time.perf_counter()
            block_info.cache_clear()
            info = block_info(lay, bq, bk)
            meta_s = time.perf_counter() - t0
            nq, nk = info.kind.shape
            causal_blocks = sum(min(nk, ((i + 1) * bq + bk - 1) // bk) for i in range(nq))
            row = {"layout": kind, "tokens": n, "visited": info.num_visited, "dense": nq * nk,
                   "causal": causal_blocks, "meta_s": meta_s}
            line = (f"{kind:22s} {n:8d} {info.num_visited:9d} {nq * nk:9d} {causal_blocks:9d} "
                    f"{info.num_visited / (nq * nk):9.4f} {meta_s:7.2f}")
            if backend:
                row.update(_bench_device(lay, info, backend, args, b, hq, hkv, d, dtype, bq, bk))
                fmt = lambda x: "-" if x is None else f"{1e3 * x:.2f}"  # noqa: E731
                tf = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
                line += (f" {fmt(row['fwd_s']):>8s} {tf(row['fwd_tflops']):>6s} {fmt(row.get('fwdbwd_s')):>8s}"
                         f" {tf(row.get('fwdbwd_tflops')):>6s} {fmt(row.get('xla_fwd_s')):>9s}"
                         f" {fmt(row.get('xla_fwdbwd_s')):>8s} {fmt(row.get('cudnn_fwd_s')):>8s}"
                         f" {fmt(row.get('cudnn_fwdbwd_s')):>9s}")
            results["rows"].append(row)
            print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def compare_xla(args) -> int:
    """Blockwise vs dense XLA attention over each layout and length: forward (or forward +
    backward) median time, XLA temporaries, compile time, and the dense / blockwise ratios."""
    from lvjax.attention import attend

    dtype = jnp.dtype(args.dtype)
    b, hq, hkv, d = args.batch, args.heads, args.kv_heads, args.head_dim
    what = "fwd" if args.no_backward else "fwd+bwd"
    print(f"platform={jax.default_backend()} B={b} Hq={hq} Hkv={hkv} D={d} {args.dtype} {what}; "
          f"blockwise blocks {args.block_q or 512}x{args.block_kv or 512}")
    print(f"{'layout':22s} {'tokens':>7s} {'impl':>9s} {'time s':>8s} {'temp GiB':>9s} {'compile s':>9s}")
    rows = []
    for kind in args.layouts:
        for n in args.lengths:
            lay = make_layout(kind, n, args.segment, args.prefix, args.suffix)
            q, k, v = _inputs(b, n, hq, hkv, d, dtype)
            mask = jax.ShapeDtypeStruct((n, n), jnp.bool_)  # dense: the mask is an argument, not a constant
            fns = {"blockwise": (lambda q, k, v, lay=lay: attend(q, k, v, layout=lay, impl="blockwise"), ()),
                   "dense": (lambda q, k, v, m: attend(q, k, v, m, impl="dense"), (mask,))}
            row = {"layout": kind, "tokens": n}
            for impl, (fn, extra) in fns.items():
                if not args.no_backward:
                    fn = jax.grad(lambda *a, fn=fn: fn(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))
                t0 = time.perf_counter()
                compiled = jax.jit(fn).lower(q, k, v, *extra).compile()
                compile_s = time.perf_counter() - t0
                temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
                t = None
                if impl == "blockwise" or temp <= args.dense_max_gib:
                    args_ = (q, k, v) + ((jnp.asarray(lay.dense_mask()),) if extra else ())
                    t = _time(compiled, *args_, iters=args.iters)
                row[impl] = {"time_s": t, "temp_gib": temp, "compile_s": compile_s}
                print(f"{kind:22s} {n:7d} {impl:>9s} {'-' if t is None else f'{t:.3f}':>8s} {temp:9.3f} "
                      f"{compile_s:9.2f}", flush=True)
            bw, dn = row["blockwise"], row["dense"]
            ratio_t = "-" if dn["time_s"] is None else f"{dn['time_s'] / bw['time_s']:.1f}x"
            print(f"{'':22s} {'':7s} {'dense/bw':>9s} {ratio_t:>8s} {dn['temp_gib'] / bw['temp_gib']:8.0f}x "
                  f"{dn['compile_s'] / bw['compile_s']:8.2f}x")
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _bench_device(lay, info, backend, args, b, hq, hkv, d, dtype, bq, bk) -> dict:
    from lvjax.attention import attend

    n = lay.length
    q, k, v = _inputs(b, n, hq, hkv, d, dtype)
    flops_fwd = 4.0 * b * hq * info.num_visited * bq * bk * d  # two matmuls per visited block
    flops_bwd = 2.5 * flops_fwd  # five matmuls (s recompute, dp, dv, dq, dk)
    out = {}

    def kern(q, k, v):
        return block_sparse_attention(q, k, v, lay, backend=backend, block_q=bq, block_kv=bk,
                                      interpret=bool(args.interpret))[0]

    def loss(fn):
        return jax.jit(jax.grad(lambda q, k, v, *a: fn(q, k, v, *a).astype(jnp.float32).sum(), argnums=(0, 1, 2)))

    t = _time(jax.jit(kern), q, k, v, iters=args.iters)
    out.update(fwd_s=t, fwd_tflops=flops_fwd / t / 1e12)
    if not args.no_backward:
        t = _time(loss(kern), q, k, v, iters=args.iters)
        out.update(fwdbwd_s=t, fwdbwd_tflops=(flops_fwd + flops_bwd) / t / 1e12)
    if n <= args.dense_max:
        mask = jnp.asarray(lay.dense_mask())  # an argument, not a baked-in constant
        dense = lambda q, k, v, m: attend(q, k, v, mask=m, impl="dense")  # noqa: E731
        try:
            out["xla_fwd_s"] = _time(jax.jit(dense), q, k, v, mask, iters=args.iters)
            if not args.no_backward:
                out["xla_fwdbwd_s"] = _time(loss(dense), q, k, v, mask, iters=args.iters)
        except Exception as e:  # out of memory at long lengths
            out["xla_error"] = type(e).__name__
    if backend == "gpu" and not args.interpret:
        def cudnn(q, k, v):  # dense causal flash attention, GQA native
            return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        try:
            out["cudnn_fwd_s"] = _time(jax.jit(cudnn), q, k, v, iters=args.iters)
            if not args.no_backward:
                out["cudnn_fwdbwd_s"] = _time(loss(cudnn), q, k, v, iters=args.iters)
        except Exception as e:
            out["cudnn_error"] = f"{type(e).__name__}: {str(e)[:120]}"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
