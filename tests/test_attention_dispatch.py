"""`lvjax.attention.attend`: the implementation rule (`choose_impl`) and every implementation
against the dense masked reference, including queries that are only some layout positions
(the last Tq — a chunk attending to a cache — or an explicit q_offset)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from kernels_pallas.block_sparse import layout as L
from kernels_pallas.block_sparse.reference import reference_attention
from lvjax import attention
from lvjax.attention import attend, choose_impl
from lvjax.families.video_xl2.spans import synthetic_spans
from lvjax.families.video_xl2.sparse import chunk_layout
from lvjax.models.llm import causal_layout

LAY = causal_layout(60, (30, 36))


@pytest.mark.parametrize("kw,want", [
    ({"backend": "tpu"}, "pallas_tpu"),
    ({"backend": "gpu"}, "pallas_gpu"),
    ({"backend": "gpu", "head_dim": 80}, "dense"),  # Triton blocks need a power-of-two head dim
    ({"backend": "gpu", "head_dim": 80, "s": 4096, "tq": 4096}, "blockwise"),
    ({"backend": "cpu"}, "dense"),
    ({"backend": "cpu", "s": 4096, "tq": 4096}, "blockwise"),
    ({"backend": "cpu", "s": 32768, "tq": 1}, "dense"),  # one query row: no S×S buffer anyway
    ({"backend": "cpu", "s": 32768, "tq": 512}, "blockwise"),
    ({"backend": "tpu", "mask": True}, "dense"),  # an extra mask: only the dense path takes it
    ({"backend": "tpu", "layout": None}, "dense"),
    ({"backend": "cpu", "impl": "pallas_gpu"}, "pallas_gpu"),
    ({"backend": "tpu", "impl": "xla"}, "dense"),
])
def test_choose_impl(kw, want):
    args = {"impl": "auto", "tq": 60, "s": 60, "head_dim": 128, "layout": LAY, "mask": None, "backend": "cpu"} | kw
    impl, tq, s, d = (args.pop(n) for n in ("impl", "tq", "s", "head_dim"))
    args["mask"] = np.ones((tq, s), bool) if args["mask"] else None
    assert choose_impl(impl, tq, s, d, **args) == want


def test_choose_impl_rejects():
    with pytest.raises(ValueError, match="unknown"):
        choose_impl("flash", 8, 8, 64, layout=LAY)
    for impl in ("blockwise", "pallas_tpu"):
        with pytest.raises(ValueError, match="needs a `layout`"):
            choose_impl(impl, 8, 8, 64)
        with pytest.raises(ValueError, match="needs a `layout`"):
            choose_impl(impl, 8, 8, 64, layout=LAY, mask=np.ones((8, 8), bool))


def _qkv(seed, tq, s, hq=4, hkv=2, d=16):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k1, (1, tq, hq, d)), jax.random.normal(k2, (1, s, hkv, d)),
            jax.random.normal(k3, (1, s, hkv, d)))


IMPLS = ["dense", "blockwise", "pallas_gpu", "pallas_interpret", pytest.param("pallas_tpu", marks=pytest.mark.heavy)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("tq,q_offset", [(60, None), (23, None), (20, 14)])
def test_every_impl_matches_reference(impl, tq, q_offset):
    """Self-attention, the last 23 positions (question rows after the padding) and rows 14..33
    (straddling the padding span) of the answer layout."""
    s = LAY.length
    q, k, v = _qkv(tq, tq, s)
    start = s - tq if q_offset is None else q_offset
    want, _ = reference_attention(q, k, v, LAY.dense_mask()[start: start + tq])
    got = jax.jit(lambda q, k, v: attend(q, k, v, impl=impl, layout=LAY, q_offset=q_offset))(q, k, v)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_auto_on_cpu_switches_to_blockwise(monkeypatch):
    lay = L.segmented(4, [20, 20], 6)
    q, k, v = _qkv(0, lay.length, lay.length)
    want, _ = reference_attention(q, k, v, lay.dense_mask())
    small = jax.jit(lambda q, k, v: attend(q, k, v, layout=lay))(q, k, v)
    monkeypatch.setattr(attention, "DENSE_MAX_SCORES", 16)
    assert choose_impl("auto", lay.length, lay.length, 16, layout=lay) == "blockwise"
    jaxpr = str(jax.make_jaxpr(lambda q, k, v: attend(q, k, v, layout=lay))(q, k, v))
    assert "scan" in jaxpr and "custom_vjp" in jaxpr
    for got in (small, attend(q, k, v, layout=lay)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_mask_and_layout_on_the_dense_path():
    q, k, v = _qkv(1, LAY.length, LAY.length)
    extra = np.tril(np.ones((LAY.length, LAY.length), bool), -3) | np.eye(LAY.length, dtype=bool)
    want, _ = reference_attention(q, k, v, LAY.dense_mask() & extra)
    np.testing.assert_allclose(np.asarray(attend(q, k, v, extra, layout=LAY)), np.asarray(want), atol=1e-6)


@pytest.mark.parametrize("impl", ["blockwise", "pallas_gpu", pytest.param("pallas_tpu", marks=pytest.mark.heavy)])
def test_gradients_with_fewer_queries_than_keys(impl):
    s, tq = LAY.length, 23
    q, k, v = _qkv(5, tq, s)
    w = jax.random.normal(jax.random.key(6), q.shape)
    mask = LAY.dense_mask()[s - tq:]
    ours = jax.jit(jax.grad(lambda q, k, v: (attend(q, k, v, impl=impl, layout=LAY) * w).sum(), argnums=(0, 1, 2)))
    ref = jax.jit(jax.grad(lambda q, k, v: (reference_attention(q, k, v, mask)[0] * w).sum(), argnums=(0, 1, 2)))
    for name, a, b in zip("qkv", ours(q, k, v), ref(q, k, v)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5, err_msg=f"d{name}")


# Video-XL-2's chunk-sparse mask with the time tokens gathered after the visual chunks (a permuted layout).
GATHERED = chunk_layout(synthetic_spans(20, prefix=3, time_tokens=2, visual=6, suffix=5), 1, 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_permuted_layout_in_original_order(impl):
    """q/k/v and the output stay in original order: every impl equals the dense reference under the
    mask by position (forward and gradients); only self-attention takes a permuted layout."""
    assert GATHERED.permuted
    s = GATHERED.length
    q, k, v = _qkv(3, s, s)
    mask = GATHERED.dense_mask()
    np.testing.assert_array_equal(mask, chunk_layout(synthetic_spans(20, prefix=3, time_tokens=2, visual=6, suffix=5),
                                                     1, 2, gather=False).dense_mask())
    w = jax.random.normal(jax.random.key(4), q.shape)
    ours = jax.jit(jax.value_and_grad(lambda q, k, v: (attend(q, k, v, impl=impl, layout=GATHERED) * w).sum(),
                                      argnums=(0, 1, 2)))
    ref = jax.jit(jax.value_and_grad(lambda q, k, v: (reference_attention(q, k, v, mask)[0] * w).sum(),
                                     argnums=(0, 1, 2)))
    (a, ga), (b, gb) = ours(q, k, v), ref(q, k, v)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-5)
    for name, x, y in zip("qkv", ga, gb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5, err_msg=f"d{name}")
    if impl != "dense":
        with pytest.raises(ValueError, match="self-attention"):
            attend(q[:, -4:], k, v, impl=impl, layout=GATHERED)
