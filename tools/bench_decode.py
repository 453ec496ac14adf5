"""Decode time per token of the jitted `decode_from_cache` after a prefill (cpu-small LLM shapes).

    python tools/bench_decode.py --prompt-len 512          # run it in two checkouts to A/B them

Same model (random weights, seed 0), same prompt; prints the best of --repeats runs of
--new-tokens tokens. Meant for before/after comparisons of the decode loop in one sitting.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import lvjax
    from lvjax.generate import decode_from_cache, prefill_cache
    from lvjax.models import llm
    from tests.hf_qwen2 import make_qwen2

    with tempfile.TemporaryDirectory() as d:
        make_qwen2(d, hidden=512, heads=8, kv_heads=2, layers=8, vocab=32000, inter=1536, std=0.02)
        model = lvjax.load(d)
    cfg, n = model.config, args.new_tokens
    ids = np.random.RandomState(0).randint(3, 32000, (1, args.prompt_len)).astype(np.int32)
    x = llm.embed(model.params, cfg, jnp.asarray(ids))
    gen = model.generation.replace(max_new_tokens=n, eos_token_ids=(), do_sample=False, repetition_penalty=1.0)
    last, caches = prefill_cache(model.params, x, jnp.ones(ids.shape, bool), cfg=cfg, max_new=n)
    seen = jnp.zeros((1, cfg.vocab_size), bool)

    def run():
        decode_from_cache(model.params, last, caches, seen, jax.random.key(0), cfg=cfg, gen=gen)[0].block_until_ready()

    run()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"{os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))}: prompt {args.prompt_len}, {n} tokens: "
          f"best {best * 1e3:.1f} ms ({best / n * 1e3:.2f} ms/token)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
