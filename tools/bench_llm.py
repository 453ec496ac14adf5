"""Prefill and decode throughput of lvjax (jitted) against transformers, same config, same run.

    python tools/bench_llm.py                       # small CPU config
    python tools/bench_llm.py --preset qwen2.5-1.5b  # the VideoChat-Flash-2B LLM shapes (GPU)

Prints tokens/s for both and the lvjax / transformers ratios. torch runs on as many threads as
XLA's CPU pool (the machine's cores; --threads to change torch's).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

PRESETS = {
    "cpu-small": dict(hidden=512, heads=8, kv_heads=2, layers=8, vocab=32000, inter=1536),
    "qwen2.5-1.5b": dict(hidden=1536, heads=12, kv_heads=2, layers=28, vocab=151936, inter=8960),
}


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores, as XLA)")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(args.threads)
    import lvjax
    from lvjax.generate import generate_from_embeds
    from lvjax.models import llm
    from tests.hf_qwen2 import make_qwen2

    p = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as d:
        torch_model = make_qwen2(d, hidden=p["hidden"], heads=p["heads"], kv_heads=p["kv_heads"], layers=p["layers"],
                                 vocab=p["vocab"], inter=p["inter"], std=0.02)
        model = lvjax.load(d)
    ids = np.random.RandomState(0).randint(3, p["vocab"], (args.batch, args.prompt_len)).astype(np.int32)
    n_new = args.new_tokens

    # lvjax: prefill alone, then prefill + n_new decode steps; decode rate from the difference.
    cfg = model.config
    gen = model.generation.replace(max_new_tokens=n_new, eos_token_ids=(), do_sample=False, repetition_penalty=1.0)
    gen1 = gen.replace(max_new_tokens=1)
    x = llm.embed(model.params, cfg, jnp.asarray(ids))
    valid = jnp.ones(ids.shape, bool)
    seen = jnp.zeros((args.batch, cfg.vocab_size), bool)
    key = jax.random.key(0)

    def run(g):
        return generate_from_embeds(model.params, x, valid, seen, key, cfg=cfg, gen=g,
                                    packed=True)[0].block_until_ready()  # no padding: blockwise above 1024

    run(gen1), run(gen)  # compile
    jx_prefill = _best(lambda: run(gen1), args.repeats)
    jx_total = _best(lambda: run(gen), args.repeats)

    t_ids = torch.tensor(ids, dtype=torch.long)
    torch.set_grad_enabled(False)

    def hf(n):
        torch_model.generate(t_ids, do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)

    hf(1)
    hf_prefill = _best(lambda: hf(1), args.repeats)
    hf_total = _best(lambda: hf(n_new), args.repeats)

    toks = args.batch * args.prompt_len
    dec = args.batch * (n_new - 1)
    rows = [
        ("prefill tokens/s", toks / jx_prefill, toks / hf_prefill),
        ("decode tokens/s", dec / max(jx_total - jx_prefill, 1e-9), dec / max(hf_total - hf_prefill, 1e-9)),
    ]
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), preset {args.preset}, "
          f"batch {args.batch}, prompt {args.prompt_len}, new {n_new}, torch threads {torch.get_num_threads()}")
    print(f"{'metric':<18}{'lvjax':>14}{'transformers':>14}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<18}{a:>14.1f}{b:>14.1f}{a / b:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
