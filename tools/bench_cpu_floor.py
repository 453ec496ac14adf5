"""What this CPU allows for `tools/bench_llm.py`'s model, measured in one run: matmul rates of its
prefill shapes (XLA vs torch), the memory bandwidth of its decode reads (jitted matvecs), the decode
floor per token that follows, and the prefill time per attention setting, the settings alternated
`--rounds` times (timings on a shared box vary by ±10 %).

    python tools/bench_cpu_floor.py [--preset cpu-small] [--prompt-len 4096] [--attention dense blockwise:512 blockwise:256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tools.bench_llm import PRESETS  # noqa: E402


def _per_call(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def matmul_rates(p: dict, rows: int, threads: int) -> list[tuple[str, float, float]]:
    """(shape, XLA GFLOP/s, torch GFLOP/s) of the projections of one layer at `rows` tokens."""
    import jax
    import torch

    torch.set_num_threads(threads)
    hd = p["hidden"] // p["heads"]
    out = []
    for k, n in ((p["hidden"], p["hidden"]), (p["hidden"], p["kv_heads"] * hd), (p["hidden"], p["inter"]),
                 (p["inter"], p["hidden"])):
        a, b = (np.random.randn(*s).astype(np.float32) for s in ((rows, k), (k, n)))
        f, ja, jb = jax.jit(lambda a, b: a @ b), jax.numpy.asarray(a), jax.numpy.asarray(b)
        ta, tb = torch.tensor(a), torch.tensor(b)
        flop = 2 * rows * k * n
        out.append((f"{rows}x{k}x{n}", flop / _per_call(lambda: f(ja, jb).block_until_ready(), 20) / 1e9,
                    flop / _per_call(lambda: ta @ tb, 20) / 1e9))
    return out


def decode_bandwidth(p: dict) -> tuple[float, float, int]:
    """(GB/s of the LM-head matvec, GB/s of the layers' matvecs, bytes one decode step reads) in fp32."""
    import jax
    import jax.numpy as jnp

    d, hd = p["hidden"], p["hidden"] // p["heads"]
    layer = [(d, d), (d, p["kv_heads"] * hd), (d, p["kv_heads"] * hd), (d, d), (d, p["inter"]), (d, p["inter"]),
             (p["inter"], d)]
    weights = [jnp.asarray(np.random.randn(*s).astype(np.float32)) for s in layer * p["layers"]]
    head = jnp.asarray(np.random.randn(p["vocab"], d).astype(np.float32))
    v = jnp.asarray(np.random.randn(d).astype(np.float32))
    head_fn = jax.jit(lambda w, v: w @ v)
    head_t = _per_call(lambda: head_fn(head, v).block_until_ready(), 20)
    layers_fn = jax.jit(lambda ws, v: sum((jnp.resize(v, w.shape[0]) @ w).sum() for w in ws))
    layers_t = _per_call(lambda: layers_fn(weights, v).block_until_ready(), 20)
    layer_bytes = sum(w.nbytes for w in weights)
    return head.nbytes / head_t / 1e9, layer_bytes / layers_t / 1e9, layer_bytes + head.nbytes


def prefill_seconds(p: dict, prompt_len: int, settings: list[str], rounds: int) -> dict[str, list[float]]:
    """Warm prefill seconds per attention setting ("dense", "blockwise:<block>"), alternated per round."""
    import jax
    import jax.numpy as jnp

    import lvjax
    from kernels_pallas.block_sparse import blockwise
    from lvjax.models import llm
    from tests.hf_qwen2 import make_qwen2

    with tempfile.TemporaryDirectory() as d:
        make_qwen2(d, hidden=p["hidden"], heads=p["heads"], kv_heads=p["kv_heads"], layers=p["layers"],
                   vocab=p["vocab"], inter=p["inter"], std=0.02)
        model = lvjax.load(d)
    ids = np.random.RandomState(0).randint(3, p["vocab"], (1, prompt_len)).astype(np.int32)
    x, valid = llm.embed(model.params, model.config, jnp.asarray(ids)), jnp.ones(ids.shape, bool)
    default_blocks = blockwise.DEFAULT_BLOCKS
    times: dict[str, list[float]] = {s: [] for s in settings}
    try:
        for _ in range(rounds):
            for s in settings:
                impl, _, block = s.partition(":")
                blockwise.DEFAULT_BLOCKS = (int(block), int(block)) if block else default_blocks
                cfg = model.config.replace(attention_impl=impl)
                run = jax.jit(lambda p_, x_, v_, cfg=cfg: llm.prefill(p_, cfg, x_, v_, packed=True)[0])
                run(model.params, x, valid).block_until_ready()  # compile
                times[s].append(_per_call(lambda run=run: run(model.params, x, valid).block_until_ready(), 1))
                jax.clear_caches()
    finally:
        blockwise.DEFAULT_BLOCKS = default_blocks
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    ap.add_argument("--prompt-len", type=int, default=4096)
    ap.add_argument("--attention", nargs="*", default=["dense", "blockwise:512", "blockwise:256"],
                    help="prefill settings to time: dense, blockwise:<block size> (none: skip the prefill)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores, as XLA)")
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    for s in args.attention:
        impl, _, block = s.partition(":")
        if impl not in ("dense", "blockwise") or (block and not block.isdigit()):
            ap.error(f"--attention {s!r}: expected dense or blockwise:<block size>")

    print(f"matmuls of one layer (preset {args.preset}), GFLOP/s     XLA   torch")
    for rows in (512, args.prompt_len):
        for shape, jx, tt in matmul_rates(p, rows, args.threads):
            print(f"  {shape:<28}{jx:>22.1f}{tt:>8.1f}")
    head_bw, layers_bw, step_bytes = decode_bandwidth(p)
    print(f"decode reads {step_bytes / 1e6:.1f} MB of weights per token; jitted matvecs stream "
          f"{head_bw:.1f} GB/s (LM head), {layers_bw:.1f} GB/s (layers): floor "
          f"{step_bytes / max(head_bw, layers_bw) / 1e6:.1f}–{step_bytes / min(head_bw, layers_bw) / 1e6:.1f} ms/token "
          f"(plus the KV cache)")
    if not args.attention:
        return 0
    times = prefill_seconds(p, args.prompt_len, args.attention, args.rounds)
    print(f"prefill of {args.prompt_len} tokens, seconds per round ({args.rounds} rounds, settings alternated):")
    for s, ts in times.items():
        print(f"  {s:<16}" + " ".join(f"{t:7.2f}" for t in ts) + f"   mean {np.mean(ts):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
