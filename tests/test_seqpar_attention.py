"""The block-sparse kernels split over a `sequence` mesh axis (8 simulated CPU devices).

`attend(..., layout=...)` with impl "blockwise" and interpreted Pallas ("pallas_interpret", GPU kernel)
under meshes sequence=4, data=2 × sequence=4 and tensor=2 × sequence=4: forward and gradients equal the
dense masked reference (`impl="dense"`, one device) within 1e-5 on the causal layout, the answer layout
with a padding span (also 45 query rows, which 4 does not divide), and Video-XL-2's chunk-sparse layout
with gathered timestamps (permuted). The work is split: the per-device tables' visited blocks sum to one
device's, and the compiled loop of the split call runs the longest device's steps, not all of them. The
tiny LLM's prefill with impl blockwise on tensor=2 × sequence=4 gives one device's logits. The work runs
in one subprocess (XLA_FLAGS must be set before jax initialises).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
SEQ, DATA_SEQ, TENSOR_SEQ = (1, 1, 1, 4), (2, 1, 1, 4), (1, 1, 2, 4)  # (data, fsdp, tensor, sequence)
RUNS = [  # (mesh, impl, case): every case on blockwise, the Pallas kernel on the other meshes
    (DATA_SEQ, "blockwise", "causal"), (DATA_SEQ, "blockwise", "answer"), (DATA_SEQ, "blockwise", "answer_last_rows"),
    (DATA_SEQ, "blockwise", "chunk_sparse_gathered"), (SEQ, "pallas_interpret", "answer_last_rows"),
    (TENSOR_SEQ, "pallas_interpret", "causal"), (TENSOR_SEQ, "pallas_interpret", "chunk_sparse_gathered"),
]
HEAVY_RUNS = RUNS[:2] + RUNS[-1:]  # CI time: the CI worker runs the other 4 (both impls, every mesh, uneven rows)
COUNT_BLOCKS = 16  # block size of the visited-block counts


def _cases():
    from kernels_pallas.block_sparse import layout as L
    from lvjax.models.llm import causal_layout

    answer = causal_layout(256, (96, 144))
    return {  # layout, query rows (the last ones)
        "causal": (L.causal(256), 256),
        "answer": (answer, 256),
        "answer_last_rows": (answer, 45),
        "chunk_sparse_gathered": (L.chunk_sparse(16, 6, 32, 2, 24, timestamp_len=4, gather_timestamps=True), 256),
    }


def _worker() -> None:
    import functools
    import re

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from kernels_pallas.block_sparse.block_info import block_info, split_tables
    from kernels_pallas.block_sparse.blockwise import blockwise_attention
    from kernels_pallas.block_sparse.sharded import split_queries
    from lvjax import sharding
    from lvjax.attention import attend
    from lvjax.config import LLMConfig
    from lvjax.models import llm, qwen2

    assert jax.device_count() == 8, jax.devices()
    cases = _cases()
    mesh = lambda sizes: sharding.make_mesh(sizes, jax.devices()[: int(np.prod(sizes))])  # noqa: E731
    out = {"attend": [], "visited": {}}
    reference = {}  # case → (q, k, v, w), the dense path's (out, grads) on one device

    def value_and_grads(lay, impl):
        def loss(q, k, v, w):
            o = attend(q, k, v, layout=lay, impl=impl)
            return (o * w).sum(), o
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))

    heavy = os.environ["LVJAX_SEQPAR_WORKER"] == "heavy"
    for sizes, impl, name in HEAVY_RUNS if heavy else [r for r in RUNS if r not in HEAVY_RUNS]:
        lay, t = cases[name]
        if name not in reference:
            ks = jax.random.split(jax.random.key(len(name)), 4)
            q = jax.random.normal(ks[0], (2, t, 4, 16))
            k, v = (jax.random.normal(kk, (2, lay.length, 2, 16)) for kk in ks[1:3])
            w = jax.random.normal(ks[3], q.shape)
            reference[name] = (q, k, v, w), value_and_grads(lay, "dense")(q, k, v, w)
        (q, k, v, w), (want_g, want) = reference[name]
        with jax.set_mesh(mesh(sizes)):
            got_g, got = value_and_grads(lay, impl)(q, k, v, w)
        errs = [float(jnp.abs(a - b).max()) for a, b in zip((got, *got_g), (want, *want_g))]
        out["attend"].append([list(sizes), impl, name, errs])
    if heavy:
        print("RESULT" + json.dumps(out))
        return

    for name, (lay, t) in cases.items():
        rows = -(-t // 4)
        one = block_info(lay, COUNT_BLOCKS, COUNT_BLOCKS, q_start=lay.length - t).num_visited
        out["visited"][name] = [split_tables(lay, COUNT_BLOCKS, COUNT_BLOCKS, rows, 4, lay.length - t).visited, one]

    # The compiled split call: its forward loop runs the longest device's steps (causal, 16-blocks).
    lay, t = cases["causal"]
    q = k = v = jnp.ones((2, t, 2, 16))
    kernel = functools.partial(blockwise_attention, layout=lay, block_q=COUNT_BLOCKS, block_kv=COUNT_BLOCKS)

    def trips(f):
        hlo = jax.jit(f).lower(q, k, v).compile().as_text()
        return [int(n) for n in re.findall(r'known_trip_count":\{"n":"(\d+)"', hlo)]

    with jax.set_mesh(mesh(SEQ)):
        split = trips(lambda q, k, v: split_queries(kernel, q, k, v, axis="sequence", count=4)[0])
    out["trips"] = {"split": split, "one": trips(lambda q, k, v: kernel(q, k, v)[0]),
                    "steps": [len(i.steps) for i in split_tables(lay, COUNT_BLOCKS, COUNT_BLOCKS, t // 4, 4).infos]}

    # The tiny LLM: a packed 128-token prefill (10 padding slots behind), attention on the blockwise path.
    cfg = LLMConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, tie_word_embeddings=False, attention_impl="blockwise")
    ids = jax.random.randint(jax.random.key(5), (2, 128), 0, 256)
    valid = jnp.ones((2, 128), bool).at[:, 118:].set(False)
    boxed = jax.jit(qwen2.Qwen2(cfg).init)(jax.random.key(6), ids)["params"]
    params = nn.unbox(boxed)

    def logits(p, ids):
        return llm.head(p, cfg, llm.prefill(p, cfg, llm.embed(p, cfg, ids), valid, packed=True)[0])

    want = jax.jit(logits)(params, ids)
    m = mesh(TENSOR_SEQ)
    placed = jax.device_put(params, sharding.tree_shardings(boxed, m, sharding.DEFAULT_RULES))
    with jax.set_mesh(m), nn.logical_axis_rules(sharding.DEFAULT_RULES):
        compiled = jax.jit(logits).lower(placed, ids).compile()
        got = compiled(placed, ids)
    # The forward loop's carry holds one device's query rows: (B, Hkv/2, G, 128/4, D).
    out["llm"] = {"max_diff": float(jnp.abs(got - want).max()),
                  "per_device_rows": "f32[2,1,2,32,16]" in compiled.as_text()}
    print("RESULT" + json.dumps(out))


def _run_worker(which: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               LVJAX_SEQPAR_WORKER=which, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[0][len("RESULT"):])


@pytest.fixture(scope="module")
def worker_out() -> dict:
    return _run_worker("ci")


def _check_runs(runs: list, want: list) -> None:
    assert [(tuple(m), i, n) for m, i, n, _ in runs] == want
    for mesh, impl, name, errs in runs:  # out, dq, dk, dv
        assert max(errs) <= TOL, (mesh, impl, name, errs)


def test_split_kernels_match_dense_reference(worker_out):
    _check_runs(worker_out["attend"], [r for r in RUNS if r not in HEAVY_RUNS])


@pytest.mark.heavy
def test_split_kernels_match_dense_reference_on_the_other_runs():
    _check_runs(_run_worker("heavy")["attend"], HEAVY_RUNS)


def test_each_device_visits_only_its_blocks(worker_out):
    visited = worker_out["visited"]
    for name in ("causal", "answer", "chunk_sparse_gathered"):  # 64 rows per device: whole 16-row blocks
        per_device, one = visited[name]
        assert sum(per_device) == one and max(per_device) < one, (name, visited[name])
    assert visited["causal"][0] == [10, 26, 42, 58]  # device i: query blocks 4i..4i+3 of a 16 × 16 causal table
    per_device, one = visited["answer_last_rows"]  # 12 rows per device, not block-aligned: a little more in all
    assert one <= sum(per_device) < 2 * one and max(per_device) < one, visited["answer_last_rows"]
    trips = worker_out["trips"]
    assert trips["one"] == [136] and trips["split"] == [max(trips["steps"])] == [58], trips


def test_split_tables_are_the_rows_of_one_table():
    """Host only: slice i's table is rows 4i..4i+3 of the single-device block kinds; the stacked step
    words are its own, then no-op steps (the last word with only SKIP set)."""
    import numpy as np

    from kernels_pallas.block_sparse.block_info import STEP_SKIP, block_info, split_tables

    lay = _cases()["chunk_sparse_gathered"][0]
    one = block_info(lay, COUNT_BLOCKS, COUNT_BLOCKS)
    split = split_tables(lay, COUNT_BLOCKS, COUNT_BLOCKS, 64, 4)
    steps = split.stacked["steps"]
    assert steps.shape == (4, max(len(i.steps) for i in split.infos))
    for i, info in enumerate(split.infos):
        np.testing.assert_array_equal(info.kind, one.kind[4 * i: 4 * i + 4])
        n = len(info.steps)
        np.testing.assert_array_equal(steps[i, :n], info.steps)
        np.testing.assert_array_equal(steps[i, n:], (info.steps[-1] & ~15) | STEP_SKIP)
        np.testing.assert_array_equal(split.stacked["kv_ptr"][i], info.kv_ptr)


def test_llm_sequence_parallel_prefill_on_blockwise(worker_out):
    assert worker_out["llm"]["per_device_rows"], worker_out["llm"]
    assert worker_out["llm"]["max_diff"] <= TOL, worker_out["llm"]


if __name__ == "__main__" and os.environ.get("LVJAX_SEQPAR_WORKER"):
    _worker()
