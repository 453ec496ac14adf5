"""Block-sparse attention in plain XLA (no Pallas): the CPU path for long sequences and the
fallback wherever the Pallas kernels do not apply.

Online-softmax (flash) attention driven by the same host metadata as the kernels
(`block_info`): one `lax.scan` over the packed visit steps, row-major for the forward
(a query block's key blocks in order, running max / sum / fp32 accumulator reset at each
row's FIRST step) and column-major for the backward (a key block's query blocks: dk/dv
accumulate in the carry, dq is added into a full-length fp32 buffer). Only non-empty blocks
are visited; the token mask is evaluated only in PARTIAL blocks. Nothing of size Tq×S is
formed: memory is O((Tq + S)·H·D) plus one block of scores. Each pass is one loop body
with a static trip count (the number of visited blocks), so compile time does not grow with S.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .api import QuerySplit, _Config, _to_kernel, layout_ids, make_config
from .block_info import STEP_FIRST, STEP_PARTIAL, STEP_SKIP, unpack_step
from .layout import Layout
from .tpu import block_mask

DEFAULT_BLOCKS = (512, 512)


def _block_logits(cfg: _Config, q, k, q_ids, kv_ids, row, col, flags):
    """Scaled fp32 logits of query block `row` × key block `col`, (B, Hkv, G, bq, bk); -inf
    where the layout forbids (PARTIAL blocks) and everywhere on a SKIP step."""
    qb = lax.dynamic_slice_in_dim(q, row * cfg.block_q, cfg.block_q, axis=3)
    kb = lax.dynamic_slice_in_dim(k, col * cfg.block_kv, cfg.block_kv, axis=2)
    s = jnp.einsum("bkgqd,bksd->bkgqs", qb, kb, preferred_element_type=jnp.float32) * cfg.scale

    def masked(s):
        qi = lax.dynamic_slice_in_dim(q_ids, row * cfg.block_q, cfg.block_q, axis=0)
        ki = lax.dynamic_slice_in_dim(kv_ids, col * cfg.block_kv, cfg.block_kv, axis=1)
        return jnp.where(block_mask(qi, ki) & ((flags & STEP_SKIP) == 0), s, -jnp.inf)

    return lax.cond((flags & (STEP_PARTIAL | STEP_SKIP)) != 0, masked, lambda s: s, s), qb


def _forward(q, k, v, cfg: _Config):
    """q (B,Hkv,G,q_len,D), k/v (B,Hkv,kv_len,D) → out (same as q, fp32), lse (B,Hkv,G,q_len)."""
    q_ids, kv_ids = layout_ids(cfg)
    bq = cfg.block_q
    row_shape = q.shape[:3] + (bq,)

    def step(carry, word):
        out, lse, m, l, acc = carry
        row, col, flags = unpack_step(word)
        first = (flags & STEP_FIRST) != 0
        m, l, acc = (jnp.where(first, init, x) for init, x in ((-jnp.inf, m), (0.0, l), (0.0, acc)))
        s, _ = _block_logits(cfg, q, k, q_ids, kv_ids, row, col, flags)
        m_new = jnp.maximum(m, s.max(-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        alpha = jnp.exp(m - m_safe)
        vb = lax.dynamic_slice_in_dim(v, col * cfg.block_kv, cfg.block_kv, axis=2)
        pv = jnp.einsum("bkgqs,bksd->bkgqd", p.astype(v.dtype), vb, preferred_element_type=jnp.float32)
        l = alpha * l + p.sum(-1)
        acc = alpha[..., None] * acc + pv
        seen = l > 0
        o = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0)
        row_lse = jnp.where(seen, m_safe + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)
        out = lax.dynamic_update_slice_in_dim(out, o, row * bq, axis=3)
        lse = lax.dynamic_update_slice_in_dim(lse, row_lse, row * bq, axis=3)
        return (out, lse, m_new, l, acc), None

    init = (jnp.zeros(q.shape, jnp.float32), jnp.full(q.shape[:4], -jnp.inf, jnp.float32),
            jnp.full(row_shape, -jnp.inf, jnp.float32), jnp.zeros(row_shape, jnp.float32),
            jnp.zeros(row_shape + (q.shape[4],), jnp.float32))
    (out, lse, *_), _ = lax.scan(step, init, cfg.table("steps"))
    return out, lse


def _backward(q, k, v, do, lse, di, cfg: _Config):
    """Kernel-layout inputs (see `_forward`), do like q, lse / di (B,Hkv,G,q_len) fp32 with
    lse = +inf on rows that see nothing → dq (like q), dk, dv (like k), fp32."""
    q_ids, kv_ids = layout_ids(cfg)
    bq, bk = cfg.block_q, cfg.block_kv
    col_shape = k.shape[:2] + (bk, k.shape[3])

    def step(carry, word):
        dq, dk, dv, dk_acc, dv_acc = carry
        col, row, flags = unpack_step(word)  # transposed steps: (key block, query block)
        first = (flags & STEP_FIRST) != 0
        dk_acc, dv_acc = (jnp.where(first, 0.0, x) for x in (dk_acc, dv_acc))
        s, qb = _block_logits(cfg, q, k, q_ids, kv_ids, row, col, flags)
        rows = lambda x: lax.dynamic_slice_in_dim(x, row * bq, bq, axis=3)  # noqa: E731
        p = jnp.exp(s - rows(lse)[..., None])
        dob = rows(do)
        kb = lax.dynamic_slice_in_dim(k, col * bk, bk, axis=2)
        vb = lax.dynamic_slice_in_dim(v, col * bk, bk, axis=2)
        dv_acc = dv_acc + jnp.einsum("bkgqs,bkgqd->bksd", p.astype(do.dtype), dob, preferred_element_type=jnp.float32)
        dp = jnp.einsum("bkgqd,bksd->bkgqs", dob, vb, preferred_element_type=jnp.float32)
        ds = p * (dp - rows(di)[..., None]) * cfg.scale
        dk_acc = dk_acc + jnp.einsum("bkgqs,bkgqd->bksd", ds.astype(q.dtype), qb, preferred_element_type=jnp.float32)
        dq_b = rows(dq) + jnp.einsum("bkgqs,bksd->bkgqd", ds.astype(k.dtype), kb, preferred_element_type=jnp.float32)
        dq = lax.dynamic_update_slice_in_dim(dq, dq_b, row * bq, axis=3)
        dk = lax.dynamic_update_slice_in_dim(dk, dk_acc, col * bk, axis=2)
        dv = lax.dynamic_update_slice_in_dim(dv, dv_acc, col * bk, axis=2)
        return (dq, dk, dv, dk_acc, dv_acc), None

    zeros = jnp.zeros(col_shape, jnp.float32)
    init = (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32),
            zeros, zeros)
    (dq, dk, dv, *_), _ = lax.scan(step, init, cfg.table("steps_t"))
    return dq, dk, dv


def _to_blocks(x, total, hkv):
    """(B, T, H, D) → (B, Hkv, H/Hkv, total, D), zero-padded along T."""
    x = _to_kernel(x, total)
    return x.reshape(x.shape[0], hkv, x.shape[1] // hkv, *x.shape[2:])


def _from_blocks(x, t):
    """(B, Hkv, G, total, D) → (B, t, Hkv·G, D)."""
    b, hkv, g, _, d = x.shape
    return jnp.swapaxes(x[:, :, :, :t].reshape(b, hkv * g, t, d), 1, 2)


def _padded(q, k, v, cfg: _Config):
    info, hkv = cfg.info, k.shape[2]
    return (_to_blocks(q, info.q_len, hkv), _to_blocks(k, info.kv_len, hkv)[:, :, 0],
            _to_blocks(v, info.kv_len, hkv)[:, :, 0])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q, k, v, cfg: _Config):
    return _attention_fwd(q, k, v, cfg)[0]


def _attention_fwd(q, k, v, cfg: _Config):
    t = q.shape[1]
    out, lse = _forward(*_padded(q, k, v, cfg), cfg)
    res = (q, k, v, out, lse)
    b, hkv, g = lse.shape[:3]
    return (_from_blocks(out, t).astype(q.dtype), lse[..., :t].reshape(b, hkv * g, t)), res


def _attention_bwd(cfg: _Config, res, cts):
    q, k, v, out, lse = res
    d_out, d_lse = cts
    info, hkv = cfg.info, k.shape[2]
    t, tk = q.shape[1], k.shape[1]
    do = _to_blocks(d_out.astype(q.dtype), info.q_len, hkv)
    d_lse = jnp.pad(d_lse.reshape(lse.shape[:3] + (t,)), ((0, 0),) * 3 + ((0, info.q_len - t),))
    di = jnp.einsum("bkgtd,bkgtd->bkgt", do.astype(jnp.float32), out) - d_lse
    lse_in = jnp.where(jnp.isfinite(lse), lse, jnp.inf)  # exp(s - inf) = 0 on rows that see nothing
    dq, dk, dv = _backward(*_padded(q, k, v, cfg), do, lse_in, di, cfg)
    return (_from_blocks(dq, t).astype(q.dtype), _from_blocks(dk[:, :, None], tk).astype(k.dtype),
            _from_blocks(dv[:, :, None], tk).astype(v.dtype))


_attention.defvjp(_attention_fwd, _attention_bwd)


def blockwise_attention(q, k, v, layout: Layout, *, scale: float | None = None, block_q: int | None = None,
                        block_kv: int | None = None, q_offset: int | None = None, split: QuerySplit | None = None):
    """Block-sparse GQA attention following `layout`, in XLA (any backend).

    q (B, Tq, Hq, D), k/v (B, S, Hkv, D) with S == layout.length and Hq % Hkv == 0; the
    queries are layout positions q_offset .. q_offset+Tq-1 (default the last Tq). Returns
    (out (B, Tq, Hq, D) in q.dtype, lse (B, Hq, Tq) fp32, -inf on rows that see no key; out
    is 0 there). fp32 softmax and accumulation; differentiable in q, k, v (and through lse)
    with a blockwise backward. `split`: inside `jax.shard_map`, q is this device's slice of a split
    query axis (`api.QuerySplit`); the scans then walk only that slice's blocks.
    """
    cfg = make_config(q, k, v, layout, scale=scale, q_offset=q_offset, block_q=block_q or DEFAULT_BLOCKS[0],
                      block_kv=block_kv or DEFAULT_BLOCKS[1], backend="xla", split=split)
    return _attention(q, k, v, cfg)
