"""Pallas GPU (Triton lowering) block-sparse attention: forward, dq and dk/dv kernels.

Same kernel layout as tpu.py: q/do (B, Hq, Tq, D), k/v (B, Hkv, Tk, D), lse/di
(B, Hq, Tq) fp32, ids q (Tq, 8) / kv (8, Tk) int32; metadata in CSR form (row pointers,
visited column blocks, partial flags: O(visited blocks) memory). One program per
(batch, head, query block) loops (`fori_loop` over [ptr[i], ptr[i+1])) over that block's
visited key blocks only, building the mask on partial blocks only (`lax.cond`); dk/dv programs (batch, kv head, key
block) loop over the G query heads of the group and the query blocks that see the key block.
The Triton lowering is deprecated after JAX 0.10 (see docs/kernels.md for the plan).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from .layout import KV_FIELDS, Q_FIELDS, mask_fn

try:  # the Triton backend's compiler params (absent in JAX versions that dropped it)
    from jax.experimental.pallas import triton as _plgpu
except ImportError:  # pragma: no cover
    _plgpu = None

NEG = -0.7 * float(np.finfo(np.float32).max)


def _params(d: int):
    if _plgpu is None:
        return None
    return _plgpu.CompilerParams(num_warps=4 if d <= 64 else 8, num_stages=2)


def _q_ids(qid_ref, sl):
    return {f: qid_ref[c, sl][:, None] for c, f in enumerate(Q_FIELDS)}


def _kv_ids(kvid_ref, sl):
    return {f: kvid_ref[r, sl][None, :] for r, f in enumerate(KV_FIELDS)}


def _mask_partial(partial, p, make_mask):
    """Zero the masked entries of p on partial blocks (the mask is not built on full ones)."""
    return lax.cond(partial != 0, lambda p: jnp.where(make_mask(), p, 0.0), lambda p: p, p)


def _fwd_kernel(ptr_ref, idx_ref, part_ref, q_ref, k_ref, v_ref, qid_ref, kvid_ref, o_ref, lse_ref,
                *, scale, block_q, block_kv):
    i = pl.program_id(2)
    q = q_ref[...]
    qid = _q_ids(qid_ref, pl.ds(i * block_q, block_q))

    def body(n, carry):
        acc, m, l = carry
        sl = pl.ds(idx_ref[n] * block_kv, block_kv)
        k, v = k_ref[sl, :], v_ref[sl, :]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * scale
        # The mask is evaluated on partial blocks only. Masked logits are NEG: while a row
        # has seen no allowed key they give p = 1, and alpha = exp(NEG - m) = 0 wipes them at
        # its first allowed key; rows that never see one are caught at the end (m == NEG).
        s = lax.cond(part_ref[n] != 0, lambda s: jnp.where(mask_fn(qid, _kv_ids(kvid_ref, sl)), s, NEG),
                     lambda s: s, s)
        m_new = jnp.maximum(m, s.max(axis=-1))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new[:, None])
        l = alpha * l + p.sum(axis=-1)
        acc = alpha[:, None] * acc + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, m_new, l

    d = q.shape[-1]
    init = (jnp.zeros((block_q, d), jnp.float32), jnp.full((block_q,), NEG, jnp.float32),
            jnp.zeros((block_q,), jnp.float32))
    acc, m, l = lax.fori_loop(ptr_ref[i], ptr_ref[i + 1], body, init)
    ok = m > 0.5 * NEG
    o_ref[...] = jnp.where(ok[:, None], acc / jnp.where(ok, l, 1.0)[:, None], 0.0).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(ok, m + jnp.log(jnp.where(ok, l, 1.0)), -jnp.inf)


def forward(q, k, v, q_ids, kv_ids, meta, *, scale: float, block_q: int, block_kv: int, interpret=False):
    """q (B,Hq,Tq,D), k/v (B,Hkv,Tk,D) → out (B,Hq,Tq,D), lse (B,Hq,Tq) fp32 (-inf on empty rows)."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = hq // hkv
    nq = tq // block_q
    q_ids_t = q_ids.T  # (8, Tq)
    full = lambda shape: pl.BlockSpec(shape, lambda *_: (0,) * len(shape))  # noqa: E731
    out, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, scale=scale, block_q=block_q, block_kv=block_kv),
        grid=(b, hq, nq),
        in_specs=[
            *(full(m.shape) for m in meta),
            pl.BlockSpec((None, None, block_q, d), lambda bb, h, i: (bb, h, i, 0)),
            pl.BlockSpec((None, None, tk, d), lambda bb, h, i: (bb, h // g, 0, 0)),
            pl.BlockSpec((None, None, tk, d), lambda bb, h, i: (bb, h // g, 0, 0)),
            full(q_ids_t.shape), full(kv_ids.shape),
        ],
        out_specs=[pl.BlockSpec((None, None, block_q, d), lambda bb, h, i: (bb, h, i, 0)),
                   pl.BlockSpec((None, None, block_q), lambda bb, h, i: (bb, h, i))],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, tq), jnp.float32)],
        compiler_params=_params(d),
        interpret=interpret,
        name="block_sparse_fwd_gpu",
    )(*meta, q, k, v, q_ids_t, kv_ids)
    return out, lse


def _dq_kernel(ptr_ref, idx_ref, part_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qid_ref, kvid_ref,
               dq_ref, *, scale, block_q, block_kv):
    i = pl.program_id(2)
    q, do = q_ref[...], do_ref[...]
    lse, di = lse_ref[...][:, None], di_ref[...][:, None]
    qid = _q_ids(qid_ref, pl.ds(i * block_q, block_q))

    def body(n, dq):
        sl = pl.ds(idx_ref[n] * block_kv, block_kv)
        k, v = k_ref[sl, :], v_ref[sl, :]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * scale
        p = _mask_partial(part_ref[n], jnp.exp(s - lse), lambda: mask_fn(qid, _kv_ids(kvid_ref, sl)))
        dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
        ds = p * (dp - di)
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32) * scale

    dq = lax.fori_loop(ptr_ref[i], ptr_ref[i + 1], body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(ptr_ref, idx_ref, part_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qid_ref, kvid_ref,
                dk_ref, dv_ref, *, scale, groups, block_q, block_kv):
    kj = pl.program_id(2)
    k, v = k_ref[...], v_ref[...]
    kvid = _kv_ids(kvid_ref, pl.ds(kj * block_kv, block_kv))
    first = ptr_ref[kj]
    n_vis = ptr_ref[kj + 1] - first

    def body(t, carry):
        dk, dv = carry
        gg, n = t // n_vis, first + t % n_vis
        sl = pl.ds(idx_ref[n] * block_q, block_q)
        q, do = q_ref[gg, sl, :], do_ref[gg, sl, :]
        lse, di = lse_ref[gg, sl][:, None], di_ref[gg, sl][:, None]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * scale
        p = _mask_partial(part_ref[n], jnp.exp(s - lse), lambda: mask_fn(_q_ids(qid_ref, sl), kvid))
        dv = dv + jnp.dot(p.T.astype(do.dtype), do, preferred_element_type=jnp.float32)
        dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
        ds = p * (dp - di)
        dk = dk + jnp.dot(ds.T.astype(q.dtype), q, preferred_element_type=jnp.float32) * scale
        return dk, dv

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, groups * n_vis, body, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def backward(q, k, v, do, lse, di, q_ids, kv_ids, meta, meta_t, *, scale: float, block_q: int, block_kv: int,
             interpret=False):
    """(dq, dk, dv) in the kernel layout; lse is +inf on empty rows, di = rowsum(do*out) - d_lse."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = hq // hkv
    nq, nk = tq // block_q, tk // block_kv
    q_ids_t = q_ids.T
    full = lambda shape: pl.BlockSpec(shape, lambda *_: (0,) * len(shape))  # noqa: E731
    qblk = pl.BlockSpec((None, None, block_q, d), lambda bb, h, i: (bb, h, i, 0))
    rowblk = pl.BlockSpec((None, None, block_q), lambda bb, h, i: (bb, h, i))
    kvall = pl.BlockSpec((None, None, tk, d), lambda bb, h, i: (bb, h // g, 0, 0))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale, block_q=block_q, block_kv=block_kv),
        grid=(b, hq, nq),
        in_specs=[*(full(m.shape) for m in meta), qblk, kvall, kvall, qblk, rowblk, rowblk,
                  full(q_ids_t.shape), full(kv_ids.shape)],
        out_specs=qblk,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_params(d),
        interpret=interpret,
        name="block_sparse_dq_gpu",
    )(*meta, q, k, v, do, lse, di, q_ids_t, kv_ids)

    # Query-side refs cover the G heads of the group: block (G, Tq) along (heads, time).
    qgrp = pl.BlockSpec((None, g, tq, d), lambda bb, h, j: (bb, h, 0, 0))
    rowgrp = pl.BlockSpec((None, g, tq), lambda bb, h, j: (bb, h, 0))
    kblk = pl.BlockSpec((None, None, block_kv, d), lambda bb, h, j: (bb, h, j, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, scale=scale, groups=g, block_q=block_q, block_kv=block_kv),
        grid=(b, hkv, nk),
        in_specs=[*(full(m.shape) for m in meta_t), qgrp, kblk, kblk, qgrp, rowgrp, rowgrp,
                  full(q_ids_t.shape), full(kv_ids.shape)],
        out_specs=[kblk, kblk],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_params(d),
        interpret=interpret,
        name="block_sparse_dkv_gpu",
    )(*meta_t, q, k, v, do, lse, di, q_ids_t, kv_ids)
    return dq, dk, dv
