"""Blockwise XLA attention (kernels_pallas.block_sparse.blockwise) against the dense masked
reference on every layout family (forward, log-sum-exp, gradients; fp32 ≤ 1e-5), with GQA,
queries that are only the last positions of the keys, bf16, and linear memory in S."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels_pallas.block_sparse import layout as L
from kernels_pallas.block_sparse.blockwise import blockwise_attention
from kernels_pallas.block_sparse.reference import reference_attention
from lvjax.models.llm import causal_layout

CASES = {  # layout, Hkv, group, Tq (None: all positions), (block_q, block_kv)
    "causal": (L.causal(70), 2, 2, None, (16, 16)),
    "full": (L.full(40), 1, 3, None, (16, 8)),
    "answer": (causal_layout(120, (60, 70)), 2, 2, None, (16, 16)),
    "answer_last_rows": (causal_layout(120, (60, 70)), 2, 2, 45, (16, 8)),
    "segmented_bidir": (L.segmented(5, [13, 9, 20], 7), 1, 4, None, (8, 16)),
    "segmented_causal_prev1": (L.segmented(5, [13, 9, 20], 7, segment_causal=True, prev=1), 2, 1, 30, (16, 16)),
    "chunk_sparse": (L.chunk_sparse(6, 5, 9, 2, 8, timestamp_len=3), 2, 2, None, (16, 8)),
    "chunk_sparse_gathered": (L.chunk_sparse(6, 5, 9, 2, 8, timestamp_len=3, gather_timestamps=True), 2, 2, None, (16, 8)),
    "qc_windows": (L.qc_windows(4, [9, 11], 5, question_causal=False), 1, 2, None, (8, 8)),
    "packed_padded": (L.packed(L.causal(11), L.padding(5), L.chunk_sparse(3, 3, 7, 1, 4, timestamp_len=1)).padded(50),
                      2, 1, None, (8, 16)),
}


def _qkv(seed, b, tq, s, hq, hkv, d, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(k1, (b, tq, hq, d), jnp.float32).astype(dtype)
    k = jax.random.normal(k2, (b, s, hkv, d), jnp.float32).astype(dtype)
    v = jax.random.normal(k3, (b, s, hkv, d), jnp.float32).astype(dtype)
    return q, k, v


def _value_and_grads(fn, w):
    """jit(q, k, v ↦ ((out, lse), d/d(q, k, v) of a weighted sum of out and finite lse))."""
    def loss(q, k, v):
        o, lse = fn(q, k, v)
        return (o.astype(jnp.float32) * w).sum() + 0.25 * jnp.where(jnp.isfinite(lse), lse, 0.0).sum(), (o, lse)

    def f(q, k, v):
        grads, res = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return res, grads
    return jax.jit(f)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_dense_reference(name):
    lay, hkv, group, tq, (bq, bk) = CASES[name]
    s = lay.length
    tq = tq or s
    q, k, v = _qkv(len(name), 2, tq, s, hkv * group, hkv, 16)
    mask = lay.mask_rows(s - tq, s)  # the queries are the last tq positions (q/k/v in the layout's order)
    w = jax.random.normal(jax.random.key(1), q.shape)
    ours = _value_and_grads(lambda q, k, v: blockwise_attention(q, k, v, lay, block_q=bq, block_kv=bk), w)
    ref = _value_and_grads(lambda q, k, v: reference_attention(q, k, v, mask), w)
    (out, lse), grads = ours(q, k, v)
    (ro, rl), rgrads = ref(q, k, v)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ro), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(rl))
    fin = np.isfinite(np.asarray(rl))
    np.testing.assert_allclose(np.asarray(lse)[fin], np.asarray(rl)[fin], atol=1e-5, rtol=1e-5)
    for n_, a, b in zip("qkv", grads, rgrads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5, err_msg=f"d{n_}")


def test_rows_that_see_nothing():
    lay = L.packed(L.padding(20), L.causal(10)).padded(37)
    q, k, v = _qkv(0, 1, lay.length, lay.length, 2, 1, 8)
    w = jnp.ones(q.shape)
    (out, lse), grads = _value_and_grads(lambda q, k, v: blockwise_attention(q, k, v, lay, block_q=8, block_kv=8), w)(q, k, v)
    dead = ~lay.dense_mask().any(1)
    assert (np.asarray(out)[0, dead] == 0).all() and (np.asarray(lse)[0, :, dead] == -np.inf).all()
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert (np.asarray(grads[2])[0, :20] == 0).all() and (np.asarray(grads[0])[0, dead] == 0).all()


def test_bf16():
    lay = L.segmented(6, [17, 12, 15], 9, segment_causal=True, prev=1)
    q, k, v = _qkv(3, 1, lay.length, lay.length, 4, 2, 32, jnp.bfloat16)
    w = jax.random.normal(jax.random.key(2), q.shape)
    (out, lse), grads = _value_and_grads(lambda q, k, v: blockwise_attention(q, k, v, lay, block_q=16, block_kv=16),
                                         w)(q, k, v)
    assert out.dtype == jnp.bfloat16 and lse.dtype == jnp.float32
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    (ro, _), rgrads = _value_and_grads(lambda q, k, v: reference_attention(q, k, v, lay.dense_mask()), w)(*f32)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ro), atol=2e-2, rtol=2e-2)
    for a, b in zip(grads, rgrads):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), atol=6e-2, rtol=6e-2)


@pytest.mark.parametrize("grad", [False, True])
def test_temp_memory_is_linear_in_length(grad):
    """XLA temporaries of a compiled long prefill's attention (forward, or forward + backward):
    doubling S adds twice the previous increment (linear), never 4x (an S×S buffer)."""
    temps = []
    for s in (2048, 4096, 8192):
        lay = causal_layout(s, (s - 300, s - 100))
        q = jax.ShapeDtypeStruct((1, s, 4, 64), jnp.float32)
        kv = jax.ShapeDtypeStruct((1, s, 2, 64), jnp.float32)
        f = lambda q, k, v, lay=lay: blockwise_attention(q, k, v, lay)[0].sum()  # noqa: E731
        f = jax.grad(f, argnums=(0, 1, 2)) if grad else f
        temps.append(jax.jit(f).lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes)
    t2, t4, t8 = temps
    assert t4 / t2 < 2.2 and t8 / t4 < 2.2, temps
    assert (t8 - t4) / (t4 - t2) < 2.5, temps  # quadratic growth would give 4
    assert t8 < 8192 * 8192 * 4 * 4 / 8, temps  # far below one fp32 (H, S, S) score tensor
