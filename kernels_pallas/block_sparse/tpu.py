"""Pallas Mosaic-TPU block-sparse attention: forward, dq and dk/dv kernels.

Layout inside the kernels: q/do (B, Hq, Tq, D), k/v (B, Hkv, Tk, D); lse/di are lane-dense
rows (B, Hq, 1, Tq) fp32; token ids come as columns (T, 8) and rows (8, T) int32 (see
layout.Q_FIELDS / KV_FIELDS) so masks are built by broadcasting without relayouts. Lengths
are multiples of the blocks.

Grid: the visited (query block, key block) pairs are flattened into one axis of packed step
words (block_info.BlockInfo.steps), scalar-prefetched into SMEM, that drive the index maps:
(B, Hq, n_steps) for the forward and dq, (B, Hkv, n_steps_t · G) for dk/dv. So the grid has
exactly one step per non-empty block (plus one per fully empty row, to write its zeros),
whatever the longest row is; a row's steps are consecutive, so its output block stays
resident and is written back once. FIRST/LAST flags initialise and finalise the VMEM
accumulators, PARTIAL selects the masked path. GQA: query head h reads kv head h // G; the
dk/dv kernel accumulates the G query heads of a group for one kv head (no repeated K/V, no
atomics) and works on transposed scores sᵀ = k·qᵀ (bk, bq), so lse/di rows broadcast
directly and every matmul is NN or NT.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from .block_info import STEP_FIRST, STEP_LAST, STEP_PARTIAL, STEP_SKIP, unpack_step
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


def _flag(flags, bit):
    return (flags & bit) != 0


def _run_steps(flags, step):
    """Call step(masked) on non-skipped steps, masked only on partial blocks."""
    live = jnp.logical_not(_flag(flags, STEP_SKIP))
    partial = _flag(flags, STEP_PARTIAL)

    @pl.when(live & partial)
    def _masked():
        step(True)

    @pl.when(live & jnp.logical_not(partial))
    def _full():
        step(False)


def _fwd_kernel(steps_ref, q_ref, k_ref, v_ref, qid_ref, kvid_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc, *, scale):
    flags = unpack_step(steps_ref[pl.program_id(2)])[2]

    @pl.when(_flag(flags, STEP_FIRST))
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
        # Masked logits are NEG: while a row has seen no allowed key (m == NEG) they give
        # p = 1, and alpha = exp(NEG - m) = 0 wipes them at its first allowed key; rows
        # that never see one are caught at the end by m == NEG.
        p = jnp.exp(s - m_new)
        l_sc[...] = alpha * l_sc[...] + p.sum(axis=-1, keepdims=True)
        acc_sc[...] = alpha * acc_sc[...] + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        m_sc[...] = m_new

    _run_steps(flags, step)

    @pl.when(_flag(flags, STEP_LAST))
    def _finish():
        m, l = m_sc[...], l_sc[...]
        ok = m > 0.5 * NEG  # the row saw at least one allowed key
        o_ref[...] = jnp.where(ok, acc_sc[...] / jnp.where(ok, l, 1.0), 0.0).astype(o_ref.dtype)
        lse_ref[...] = _col_to_row(jnp.where(ok, m + jnp.log(jnp.where(ok, l, 1.0)), -jnp.inf))


def _params(n_parallel: int, n_arbitrary: int):
    return pltpu.CompilerParams(dimension_semantics=("parallel",) * n_parallel + ("arbitrary",) * n_arbitrary)


def _row_maps(group: int):
    """Index maps for the forward / dq grid (b, h, t) driven by the packed step words."""

    def q_map(bb, h, t, steps):
        return (bb, h, unpack_step(steps[t])[0], 0)

    def row_map(bb, h, t, steps):
        return (bb, h, 0, unpack_step(steps[t])[0])

    def kv_map(bb, h, t, steps):
        return (bb, h // group, unpack_step(steps[t])[1], 0)

    def qid_map(bb, h, t, steps):
        return (unpack_step(steps[t])[0], 0)

    def kvid_map(bb, h, t, steps):
        return (0, unpack_step(steps[t])[1])

    return q_map, row_map, kv_map, qid_map, kvid_map


def forward(q, k, v, q_ids, kv_ids, steps, *, scale: float, block_q: int, block_kv: int, interpret=False):
    """q (B,Hq,Tq,D), k/v (B,Hkv,Tk,D), q_ids (Tq,8), kv_ids (8,Tk), steps (n_steps,) packed
    int32 → out (B,Hq,Tq,D) q.dtype, lse (B,Hq,Tq) fp32 (-inf on rows that see nothing)."""
    b, hq, tq, d = q.shape
    g = hq // k.shape[1]
    q_map, row_map, kv_map, qid_map, kvid_map = _row_maps(g)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(b, hq, steps.shape[0]),
        in_specs=[
            pl.BlockSpec((None, None, block_q, d), q_map),
            pl.BlockSpec((None, None, block_kv, d), kv_map),
            pl.BlockSpec((None, None, block_kv, d), kv_map),
            pl.BlockSpec((block_q, q_ids.shape[1]), qid_map),
            pl.BlockSpec((kv_ids.shape[0], block_kv), kvid_map),
        ],
        out_specs=[pl.BlockSpec((None, None, block_q, d), q_map), pl.BlockSpec((None, None, 1, block_q), row_map)],
        scratch_shapes=[pltpu.VMEM((block_q, 1), jnp.float32), pltpu.VMEM((block_q, 1), jnp.float32),
                        pltpu.VMEM((block_q, d), jnp.float32)],
    )
    out, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, scale=scale),
        grid_spec=grid_spec,
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, hq, 1, tq), jnp.float32)],
        compiler_params=_params(2, 1),
        interpret=interpret,
        name="block_sparse_fwd",
    )(steps, q, k, v, q_ids, kv_ids)
    return out, lse[:, :, 0, :]


def _dq_kernel(steps_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qid_ref, kvid_ref,
               dq_ref, dq_sc, lse_sc, di_sc, *, scale):
    flags = unpack_step(steps_ref[pl.program_id(2)])[2]

    @pl.when(_flag(flags, STEP_FIRST))
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

    _run_steps(flags, step)

    @pl.when(_flag(flags, STEP_LAST))
    def _finish():
        dq_ref[...] = dq_sc[...].astype(dq_ref.dtype)


def _dkv_kernel(steps_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qrow_ref, kvcol_ref,
                dk_ref, dv_ref, dk_sc, dv_sc, *, scale, groups):
    t = pl.program_id(2)
    gg = t % groups
    flags = unpack_step(steps_ref[t // groups])[2]

    @pl.when(_flag(flags, STEP_FIRST) & (gg == 0))
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

    _run_steps(flags, step)

    @pl.when(_flag(flags, STEP_LAST) & (gg == groups - 1))
    def _finish():
        dk_ref[...] = dk_sc[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def backward(q, k, v, do, lse, di, q_ids, kv_ids, steps, steps_t, *, scale: float, block_q: int, block_kv: int,
             interpret=False):
    """Gradients (dq, dk, dv) in the kernel layout. lse (B,Hq,Tq) must be +inf (not -inf) on
    empty rows; di = rowsum(do * out) - d_lse, (B,Hq,Tq) fp32; steps / steps_t are the packed
    step words of the metadata and of its transpose (rows = key blocks)."""
    b, hq, tq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    nid = q_ids.shape[1]
    lse, di = lse[:, :, None, :], di[:, :, None, :]  # lane-dense rows (B, Hq, 1, Tq)
    q_map, row_map, kv_map, qid_map, kvid_map = _row_maps(g)

    dq = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(b, hq, steps.shape[0]),
            in_specs=[
                pl.BlockSpec((None, None, block_q, d), q_map),
                pl.BlockSpec((None, None, block_kv, d), kv_map),
                pl.BlockSpec((None, None, block_kv, d), kv_map),
                pl.BlockSpec((None, None, block_q, d), q_map),
                pl.BlockSpec((None, None, 1, block_q), row_map),
                pl.BlockSpec((None, None, 1, block_q), row_map),
                pl.BlockSpec((block_q, nid), qid_map),
                pl.BlockSpec((nid, block_kv), kvid_map),
            ],
            out_specs=pl.BlockSpec((None, None, block_q, d), q_map),
            scratch_shapes=[pltpu.VMEM((block_q, d), jnp.float32), pltpu.VMEM((block_q, 1), jnp.float32),
                            pltpu.VMEM((block_q, 1), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_params(2, 1),
        interpret=interpret,
        name="block_sparse_dq",
    )(steps, q, k, v, do, lse, di, q_ids, kv_ids)

    # dk/dv: step t handles pair t // G (key block, query block) for query head h·G + t % G.
    def qt_map(bb, h, t, st):
        return (bb, h * g + t % g, unpack_step(st[t // g])[1], 0)

    def rowt_map(bb, h, t, st):
        return (bb, h * g + t % g, 0, unpack_step(st[t // g])[1])

    def kt_map(bb, h, t, st):
        return (bb, h, unpack_step(st[t // g])[0], 0)

    def qrow_map(bb, h, t, st):
        return (0, unpack_step(st[t // g])[1])

    def kvcol_map(bb, h, t, st):
        return (unpack_step(st[t // g])[0], 0)

    q_rows, kv_cols = q_ids.T, kv_ids.T  # (8, Tq), (Tk, 8)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, scale=scale, groups=g),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(b, hkv, steps_t.shape[0] * g),
            in_specs=[
                pl.BlockSpec((None, None, block_q, d), qt_map),
                pl.BlockSpec((None, None, block_kv, d), kt_map),
                pl.BlockSpec((None, None, block_kv, d), kt_map),
                pl.BlockSpec((None, None, block_q, d), qt_map),
                pl.BlockSpec((None, None, 1, block_q), rowt_map),
                pl.BlockSpec((None, None, 1, block_q), rowt_map),
                pl.BlockSpec((nid, block_q), qrow_map),
                pl.BlockSpec((block_kv, nid), kvcol_map),
            ],
            out_specs=[pl.BlockSpec((None, None, block_kv, d), kt_map), pl.BlockSpec((None, None, block_kv, d), kt_map)],
            scratch_shapes=[pltpu.VMEM((block_kv, d), jnp.float32), pltpu.VMEM((block_kv, d), jnp.float32)],
        ),
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_params(2, 1),
        interpret=interpret,
        name="block_sparse_dkv",
    )(steps_t, q, k, v, do, lse, di, q_rows, kv_cols)
    return dq, dk, dv
