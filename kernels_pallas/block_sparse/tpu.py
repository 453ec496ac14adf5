"""Pallas Mosaic-TPU block-sparse attention: forward, dq and dk/dv kernels.

Layout inside the kernels: q/do (B, Hq, Tq, D), k/v (B, Hkv, Tk, D); lse/di are lane-dense
rows (B, Hq, 1, Tq) fp32; token ids come as columns (T, 8) and rows (8, T) int32 (see
layout.Q_FIELDS / KV_FIELDS) so masks are built by broadcasting without relayouts. Lengths
are multiples of the blocks. The dk/dv kernel works on transposed scores sᵀ = k·qᵀ
(bk, bq), so lse/di rows broadcast directly and every matmul is NN or NT. The block metadata (visit counts, visited block indices, partial
flags; flattened 1-D int32) is scalar-prefetched into SMEM and drives the index maps, so the
grid's last axis only runs over visited (non-empty) blocks: (B, Hq, nq, max_visits) for the
forward and dq, (B, Hkv, nk, G, max_q_visits) for dk/dv. Steps past a block's count repeat
the last index (no new DMA) and skip compute. GQA: query head h reads kv head h // G.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from .layout import KV_FIELDS, Q_FIELDS, mask_fn

NEG = -0.7 * float(np.finfo(np.float32).max)
_NT = (((1,), (1,)), ((), ()))  # a @ b.T


def block_mask(qid, kvid):
    """qid (bq, 8), kvid (8, bk) int32 → (bq, bk) bool via layout.mask_fn."""
    q = {f: qid[:, c : c + 1] for c, f in enumerate(Q_FIELDS)}
    kv = {f: kvid[r : r + 1, :] for r, f in enumerate(KV_FIELDS)}
    return mask_fn(q, kv)


def block_mask_t(qid_rows, kvid_cols):
    """qid_rows (8, bq), kvid_cols (bk, 8) int32 → the transposed mask (bk, bq) bool."""
    q = {f: qid_rows[r : r + 1, :] for r, f in enumerate(Q_FIELDS)}
    kv = {f: kvid_cols[:, c : c + 1] for c, f in enumerate(KV_FIELDS)}
    return mask_fn(q, kv)


_LANES = 128


def _col_to_row(x):
    """(n, 1) → (1, n) through a tile-aligned (n, 128) transpose."""
    return jnp.transpose(jnp.broadcast_to(x, (x.shape[0], _LANES)))[:1, :]


def _row_to_col(x):
    """(1, n) → (n, 1) through a tile-aligned (128, n) transpose."""
    return jnp.transpose(jnp.broadcast_to(x, (_LANES, x.shape[1])))[:, :1]


def _fwd_kernel(cnt_ref, idx_ref, part_ref, q_ref, k_ref, v_ref, qid_ref, kvid_ref,
                o_ref, lse_ref, m_sc, l_sc, acc_sc, *, scale, width):
    i, j = pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, NEG, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    def step(masked: bool):
        q, k, v = q_ref[...], k_ref[...], v_ref[...]
        s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32) * scale
        if masked:
            mask = block_mask(qid_ref[...], kvid_ref[...])
            s = jnp.where(mask, s, NEG)
        m_prev = m_sc[...]
        m_new = jnp.maximum(m_prev, s.max(axis=-1, keepdims=True))
        alpha = jnp.exp(m_prev - m_new)
        p = jnp.exp(s - m_new)
        if masked:
            p = jnp.where(mask, p, 0.0)
        l_sc[...] = alpha * l_sc[...] + p.sum(axis=-1, keepdims=True)
        acc_sc[...] = alpha * acc_sc[...] + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        m_sc[...] = m_new

    live = j < cnt_ref[i]
    partial = part_ref[i * width + j] != 0

    @pl.when(live & partial)
    def _masked():
        step(True)

    @pl.when(live & jnp.logical_not(partial))
    def _full():
        step(False)

    @pl.when(j == width - 1)
    def _finish():
        l = l_sc[...]
        ok = l > 0
        o_ref[...] = (acc_sc[...] / jnp.where(ok, l, 1.0)).astype(o_ref.dtype)
        lse_ref[...] = _col_to_row(jnp.where(ok, m_sc[...] + jnp.log(jnp.where(ok, l, 1.0)), -jnp.inf))


def _params(n_parallel: int, n_arbitrary: int):
    return pltpu.CompilerParams(dimension_semantics=("parallel",) * n_parallel + ("arbitrary",) * n_arbitrary)


def forward(q, k, v, q_ids, kv_ids, meta, *, scale: float, block_q: int, block_kv: int, interpret=False):
    """q (B,Hq,Tq,D), k/v (B,Hkv,Tk,D) → out (B,Hq,Tq,D) q.dtype, lse (B,Hq,Tq) fp32 (-inf on empty rows).

    meta: (counts (nq,), kv_index (nq*W,), kv_partial (nq*W,)) int32 with width W.
    """
    b, hq, tq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    counts, kv_index, kv_partial = meta
    nq = tq // block_q
    width = kv_index.shape[0] // nq

    def kv_map(bb, h, i, j, cnt, idx, part):
        return (bb, h // g, idx[i * width + j], 0)

    def q_map(bb, h, i, j, cnt, idx, part):
        return (bb, h, i, 0)

    def q_map_row(bb, h, i, j, cnt, idx, part):
        return (bb, h, 0, i)

    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3,
        grid=(b, hq, nq, width),
        in_specs=[
            pl.BlockSpec((None, None, block_q, d), q_map),
            pl.BlockSpec((None, None, block_kv, d), kv_map),
            pl.BlockSpec((None, None, block_kv, d), kv_map),
            pl.BlockSpec((block_q, q_ids.shape[1]), lambda bb, h, i, j, *_: (i, 0)),
            pl.BlockSpec((kv_ids.shape[0], block_kv), lambda bb, h, i, j, cnt, idx, part: (0, idx[i * width + j])),
        ],
        out_specs=[
            pl.BlockSpec((None, None, block_q, d), q_map),
            pl.BlockSpec((None, None, 1, block_q), q_map_row),
        ],
        scratch_shapes=[
            pltpu.VMEM((block_q, 1), jnp.float32),
            pltpu.VMEM((block_q, 1), jnp.float32),
            pltpu.VMEM((block_q, d), jnp.float32),
        ],
    )
    kernel = functools.partial(_fwd_kernel, scale=scale, width=width)
    out, lse = pl.pallas_call(
        kernel,
        grid_spec=grid_spec,
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, 1, tq), jnp.float32)],
        compiler_params=_params(3, 1),
        interpret=interpret,
        name="block_sparse_fwd",
    )(counts, kv_index, kv_partial, q, k, v, q_ids, kv_ids)
    return out, lse[:, :, 0, :]


def _dq_kernel(cnt_ref, idx_ref, part_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qid_ref, kvid_ref,
               dq_ref, dq_sc, lse_sc, di_sc, *, scale, width):
    i, j = pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)
        lse_sc[...] = _row_to_col(lse_ref[...])  # once per query block
        di_sc[...] = _row_to_col(di_ref[...])

    def step(masked: bool):
        k, v = k_ref[...], v_ref[...]
        s = lax.dot_general(q_ref[...], k, _NT, preferred_element_type=jnp.float32) * scale
        p = jnp.exp(s - lse_sc[...])  # lse = +inf on empty rows → 0
        if masked:
            p = jnp.where(block_mask(qid_ref[...], kvid_ref[...]), p, 0.0)
        dp = lax.dot_general(do_ref[...], v, _NT, preferred_element_type=jnp.float32)
        ds = p * (dp - di_sc[...])
        dq_sc[...] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32) * scale

    live = j < cnt_ref[i]
    partial = part_ref[i * width + j] != 0

    @pl.when(live & partial)
    def _masked():
        step(True)

    @pl.when(live & jnp.logical_not(partial))
    def _full():
        step(False)

    @pl.when(j == width - 1)
    def _finish():
        dq_ref[...] = dq_sc[...].astype(dq_ref.dtype)


def _dkv_kernel(cnt_ref, idx_ref, part_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qrow_ref, kvcol_ref,
                dk_ref, dv_ref, dk_sc, dv_sc, *, scale, width, groups):
    ki, g, j = pl.program_id(2), pl.program_id(3), pl.program_id(4)

    @pl.when((g == 0) & (j == 0))
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    def step(masked: bool):
        q, do, k = q_ref[...], do_ref[...], k_ref[...]
        st = lax.dot_general(k, q, _NT, preferred_element_type=jnp.float32) * scale  # (bk, bq)
        pt = jnp.exp(st - lse_ref[...])
        if masked:
            pt = jnp.where(block_mask_t(qrow_ref[...], kvcol_ref[...]), pt, 0.0)
        dv_sc[...] += jnp.dot(pt.astype(do.dtype), do, preferred_element_type=jnp.float32)
        dpt = lax.dot_general(v_ref[...], do, _NT, preferred_element_type=jnp.float32)  # (bk, bq)
        dst = pt * (dpt - di_ref[...])
        dk_sc[...] += jnp.dot(dst.astype(q.dtype), q, preferred_element_type=jnp.float32) * scale

    live = j < cnt_ref[ki]
    partial = part_ref[ki * width + j] != 0

    @pl.when(live & partial)
    def _masked():
        step(True)

    @pl.when(live & jnp.logical_not(partial))
    def _full():
        step(False)

    @pl.when((g == groups - 1) & (j == width - 1))
    def _finish():
        dk_ref[...] = dk_sc[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def backward(q, k, v, do, lse, di, q_ids, kv_ids, meta, meta_t, *, scale: float, block_q: int, block_kv: int,
             interpret=False):
    """Gradients (dq, dk, dv) in the kernel layout. lse (B,Hq,Tq) must be +inf (not -inf) on
    empty rows; di = rowsum(do * out) - d_lse, (B,Hq,Tq) fp32. meta_t is the transposed
    metadata (q_counts (nk,), q_index (nk*Wt,), q_partial (nk*Wt,))."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = hq // hkv
    nq, nk = tq // block_q, tk // block_kv
    width = meta[1].shape[0] // nq
    width_t = meta_t[1].shape[0] // nk
    nid = q_ids.shape[1]
    lse, di = lse[:, :, None, :], di[:, :, None, :]  # lane-dense rows (B, Hq, 1, Tq)

    # ---- dq: same grid as the forward --------------------------------------------------
    def q_map(bb, h, i, j, *_):
        return (bb, h, i, 0)

    def row_map(bb, h, i, j, *_):
        return (bb, h, 0, i)

    def kv_map(bb, h, i, j, cnt, idx, part):
        return (bb, h // g, idx[i * width + j], 0)

    dq = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale, width=width),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=3,
            grid=(b, hq, nq, width),
            in_specs=[
                pl.BlockSpec((None, None, block_q, d), q_map),
                pl.BlockSpec((None, None, block_kv, d), kv_map),
                pl.BlockSpec((None, None, block_kv, d), kv_map),
                pl.BlockSpec((None, None, block_q, d), q_map),
                pl.BlockSpec((None, None, 1, block_q), row_map),
                pl.BlockSpec((None, None, 1, block_q), row_map),
                pl.BlockSpec((block_q, nid), lambda bb, h, i, j, *_: (i, 0)),
                pl.BlockSpec((nid, block_kv), lambda bb, h, i, j, cnt, idx, part: (0, idx[i * width + j])),
            ],
            out_specs=pl.BlockSpec((None, None, block_q, d), q_map),
            scratch_shapes=[pltpu.VMEM((block_q, d), jnp.float32), pltpu.VMEM((block_q, 1), jnp.float32),
                            pltpu.VMEM((block_q, 1), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_params(3, 1),
        interpret=interpret,
        name="block_sparse_dq",
    )(*meta, q, k, v, do, lse, di, q_ids, kv_ids)

    # ---- dk/dv: per key block, loop over the G query heads and the visiting q blocks ----
    def qt_map(bb, h, ki, gg, j, cnt, idx, part):
        return (bb, h * g + gg, idx[ki * width_t + j], 0)

    def rowt_map(bb, h, ki, gg, j, cnt, idx, part):
        return (bb, h * g + gg, 0, idx[ki * width_t + j])

    def kt_map(bb, h, ki, gg, j, *_):
        return (bb, h, ki, 0)

    q_rows, kv_cols = q_ids.T, kv_ids.T  # (8, Tq), (Tk, 8)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, scale=scale, width=width_t, groups=g),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=3,
            grid=(b, hkv, nk, g, width_t),
            in_specs=[
                pl.BlockSpec((None, None, block_q, d), qt_map),
                pl.BlockSpec((None, None, block_kv, d), kt_map),
                pl.BlockSpec((None, None, block_kv, d), kt_map),
                pl.BlockSpec((None, None, block_q, d), qt_map),
                pl.BlockSpec((None, None, 1, block_q), rowt_map),
                pl.BlockSpec((None, None, 1, block_q), rowt_map),
                pl.BlockSpec((nid, block_q), lambda bb, h, ki, gg, j, cnt, idx, part: (0, idx[ki * width_t + j])),
                pl.BlockSpec((block_kv, nid), lambda bb, h, ki, gg, j, *_: (ki, 0)),
            ],
            out_specs=[pl.BlockSpec((None, None, block_kv, d), kt_map), pl.BlockSpec((None, None, block_kv, d), kt_map)],
            scratch_shapes=[pltpu.VMEM((block_kv, d), jnp.float32), pltpu.VMEM((block_kv, d), jnp.float32)],
        ),
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_params(3, 2),
        interpret=interpret,
        name="block_sparse_dkv",
    )(*meta_t, q, k, v, do, lse, di, q_rows, kv_cols)
    return dq, dk, dv
