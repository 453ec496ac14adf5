"""Block-sparse kernels in Pallas interpret mode (CPU) against the dense masked reference:
forward output and log-sum-exp, gradients, GQA, bf16, padding/empty rows, JAX splash
attention, and the `attend(..., layout=...)` dispatch."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels_pallas.block_sparse import layout as L
from kernels_pallas.block_sparse.api import block_sparse_attention
from kernels_pallas.block_sparse.reference import reference_from_layout
from lvjax.attention import attend
from lvjax.models.llm import causal_layout

BACKENDS = ["tpu", "gpu"]


def _qkv(key, b, t, hq, hkv, d, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    q = jax.random.normal(k1, (b, t, hq, d), jnp.float32).astype(dtype)
    k = jax.random.normal(k2, (b, t, hkv, d), jnp.float32).astype(dtype)
    v = jax.random.normal(k3, (b, t, hkv, d), jnp.float32).astype(dtype)
    return q, k, v


def _check_fwd(out, lse, ro, rl, tol):
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ro, np.float32), atol=tol, rtol=tol)
    lse, rl = np.asarray(lse), np.asarray(rl)
    np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(rl))
    fin = np.isfinite(rl)
    np.testing.assert_allclose(lse[fin], rl[fin], atol=tol, rtol=tol)
    assert (lse[~fin] == -np.inf).all()


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(["segmented", "chunk", "qc", "packed"]))
    if kind == "segmented":
        lay = L.segmented(draw(st.integers(0, 9)), draw(st.lists(st.integers(3, 21), min_size=1, max_size=3)),
                          draw(st.integers(0, 9)), segment_causal=draw(st.booleans()), prev=draw(st.integers(0, 2)))
    elif kind == "chunk":
        lay = L.chunk_sparse(draw(st.integers(1, 7)), draw(st.integers(1, 4)), draw(st.integers(3, 13)),
                             draw(st.integers(0, 2)), draw(st.integers(0, 7)), timestamp_len=draw(st.integers(0, 2)),
                             gather_timestamps=draw(st.booleans()))
    elif kind == "qc":
        lay = L.qc_windows(draw(st.integers(0, 7)), draw(st.lists(st.integers(3, 13), min_size=1, max_size=3)),
                           draw(st.integers(1, 5)), window_causal=draw(st.booleans()),
                           question_causal=draw(st.booleans()))
    else:  # packed with padding in the middle and at the end: empty rows and columns
        lay = L.packed(L.causal(draw(st.integers(1, 19))), L.padding(draw(st.integers(1, 9))),
                       L.segmented(2, [draw(st.integers(3, 11))] * 2, 3, prev=1))
        lay = lay.padded(lay.length + draw(st.integers(0, 7)))
    hkv = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2, 6]))
    bq, bk = draw(st.sampled_from([(8, 8), (16, 8), (8, 16)]))
    return lay, hkv, group, bq, bk, draw(st.integers(0, 2**16))


def _fwd_case(backend, case):
    lay, hkv, group, bq, bk, seed = case
    q, k, v = _qkv(seed, 1, lay.length, hkv * group, hkv, 16)
    out, lse = block_sparse_attention(q, k, v, lay, backend=backend, block_q=bq, block_kv=bk, interpret=True)
    ro, rl = reference_from_layout(q, k, v, lay)
    _check_fwd(out, lse, ro, rl, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=2, deadline=None)  # CI time; test_forward_matches_reference_fp32_many draws 60 (heavy)
@given(cases())
def test_forward_matches_reference_fp32(backend, case):
    _fwd_case(backend, case)


@pytest.mark.heavy
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(cases())
def test_forward_matches_reference_fp32_many(backend, case):
    _fwd_case(backend, case)


@pytest.mark.heavy
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(cases())
def test_gradients_random_layouts(backend, case):
    lay, hkv, group, bq, bk, seed = case
    q, k, v = _qkv(seed, 1, lay.length, hkv * group, hkv, 16)
    w = jax.random.normal(jax.random.key(seed + 1), q.shape)
    kern = lambda q, k, v: block_sparse_attention(q, k, v, lay, backend=backend, block_q=bq, block_kv=bk,  # noqa: E731
                                                  interpret=True)
    g1 = jax.grad(_loss(kern, w), argnums=(0, 1, 2))(q, k, v)
    g2 = jax.grad(_loss(lambda q, k, v: reference_from_layout(q, k, v, lay), w), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


def _loss(fn, w):
    def f(q, k, v):
        o, l = fn(q, k, v)
        return (o.astype(jnp.float32) * w).sum() + 0.25 * jnp.where(jnp.isfinite(l), l, 0.0).sum()
    return f


GRAD_LAYOUTS = [
    (L.segmented(5, [13, 9, 20], 7, prev=1), 2, 2, (16, 8)),
    (L.qc_windows(4, [9, 11], 5, question_causal=False), 1, 6, (8, 8)),
    (L.packed(L.causal(11), L.padding(5), L.chunk_sparse(3, 3, 7, 1, 4, timestamp_len=1)).padded(50), 2, 1, (8, 16)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("idx", [0] + [pytest.param(i, marks=pytest.mark.heavy) for i in range(1, len(GRAD_LAYOUTS))])
def test_gradients_match_reference(backend, idx):
    lay, hkv, group, (bq, bk) = GRAD_LAYOUTS[idx]
    q, k, v = _qkv(idx, 1 + (backend == "gpu"), lay.length, hkv * group, hkv, 16)
    w = jax.random.normal(jax.random.key(99), q.shape)
    kern = lambda q, k, v: block_sparse_attention(q, k, v, lay, backend=backend, block_q=bq, block_kv=bk,  # noqa: E731
                                                  interpret=True)
    ref = lambda q, k, v: reference_from_layout(q, k, v, lay)  # noqa: E731
    g1 = jax.grad(_loss(kern, w), argnums=(0, 1, 2))(q, k, v)
    g2 = jax.grad(_loss(ref, w), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", g1, g2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4, err_msg=f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_answer_layout_question_blocks_see_the_video(backend):
    """`[prefix + visual][padding][question]` with three query blocks of question tokens only:
    they must attend to the prefix/visual key blocks across the padding (forward and grads)."""
    lay = causal_layout(120, (60, 70))  # question rows 70..119: blocks 5, 6 are question-only (block 16)
    q, k, v = _qkv(7, 1, lay.length, 4, 2, 16)
    kern = lambda q, k, v: block_sparse_attention(q, k, v, lay, backend=backend, block_q=16, block_kv=16,  # noqa: E731
                                                  interpret=True)
    ref = lambda q, k, v: reference_from_layout(q, k, v, lay)  # noqa: E731
    _check_fwd(*kern(q, k, v), *ref(q, k, v), 1e-5)
    w = jax.random.normal(jax.random.key(8), q.shape)
    g1 = jax.grad(_loss(kern, w), argnums=(0, 1, 2))(q, k, v)
    g2 = jax.grad(_loss(ref, w), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", g1, g2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_forward_and_grad(backend):
    lay = L.segmented(6, [17, 12, 15], 9, segment_causal=True, prev=1)
    q, k, v = _qkv(3, 1, lay.length, 4, 2, 32, jnp.bfloat16)
    out, lse = block_sparse_attention(q, k, v, lay, backend=backend, block_q=16, block_kv=16, interpret=True)
    assert out.dtype == jnp.bfloat16
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    ro, rl = reference_from_layout(*f32, lay)
    _check_fwd(out, lse, ro, rl, 2e-2)
    w = jax.random.normal(jax.random.key(5), q.shape)
    kern = lambda q, k, v: block_sparse_attention(q, k, v, lay, backend=backend, block_q=16, block_kv=16,  # noqa: E731
                                                  interpret=True)
    g1 = jax.grad(_loss(kern, w), argnums=(0, 1, 2))(q, k, v)
    g2 = jax.grad(_loss(lambda q, k, v: reference_from_layout(q, k, v, lay), w), argnums=(0, 1, 2))(*f32)
    for a, b in zip(g1, g2):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), atol=6e-2, rtol=6e-2)


def test_head_dim_64_and_128_tpu():
    lay = L.segmented(8, [20, 17], 3)
    for d in (64, 128):
        q, k, v = _qkv(d, 1, lay.length, 2, 1, d)
        out, lse = block_sparse_attention(q, k, v, lay, backend="tpu", block_q=16, block_kv=16, interpret=True)
        ro, rl = reference_from_layout(q, k, v, lay)
        _check_fwd(out, lse, ro, rl, 1e-5)


def test_matches_jax_splash_attention():
    """Chunked-causal (segment-local causal) attention vs JAX's splash kernel in interpret mode."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as sk,
    )
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_mask as sm,
    )

    t, h, d, chunk = 256, 2, 64, 96
    lay = L.segmented(0, [chunk, chunk, t - 2 * chunk], 0, segment_causal=True)
    q, k, v = _qkv(11, 1, t, h, h, d)
    mask = sm.MultiHeadMask([sm.ChunkedCausalMask((t, t), chunk_size=chunk) for _ in range(h)])
    splash = sk.make_splash_mha(mask, block_sizes=sk.BlockSizes(block_q=128, block_kv=128, block_kv_compute=128),
                                head_shards=1, q_seq_shards=1, interpret=True)
    scale = d**-0.5
    ref = splash(q[0].swapaxes(0, 1) * scale, k[0].swapaxes(0, 1), v[0].swapaxes(0, 1)).swapaxes(0, 1)[None]
    out, _ = block_sparse_attention(q, k, v, lay, backend="tpu", block_q=64, block_kv=64, interpret=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "pallas_tpu", "pallas_gpu"])
def test_attend_layout_dispatch(impl):
    lay = L.qc_windows(5, [11, 9], 4)
    q, k, v = _qkv(1, 1, lay.length, 4, 2, 16)
    out = attend(q, k, v, layout=lay, impl=impl, interpret=True)
    dense = attend(q, k, v, mask=lay.dense_mask())
    np.testing.assert_allclose(np.asarray(out), np.asarray(dense), atol=1e-5, rtol=1e-5)
    auto = attend(q, k, v, layout=lay)  # CPU: dense reference
    np.testing.assert_allclose(np.asarray(auto), np.asarray(dense), atol=1e-6)
    with pytest.raises(ValueError):
        attend(q, k, v, impl="pallas_tpu")
