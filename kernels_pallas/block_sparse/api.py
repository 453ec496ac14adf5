"""Public entry: `block_sparse_attention(q, k, v, layout, ...)` with a custom VJP.

Pads T to the block multiples (pad tokens are masked by the layout ids), transposes to the
kernel layout (B, H, T, D), runs the TPU (Mosaic, scalar prefetch) or GPU (Triton) kernels,
and differentiates with the matching dq / dk-dv kernels that visit only non-empty blocks.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import gpu as _gpu
from . import tpu as _tpu
from .block_info import BlockInfo, block_info, split_tables
from .layout import Layout

DEFAULT_BLOCKS = {"tpu": (512, 512), "gpu": (64, 64)}


@dataclasses.dataclass(frozen=True)
class QuerySplit:
    """Inside `jax.shard_map`: the call's queries are slice `lax.axis_index(axis)` of a query axis cut
    into `count` slices of `rows` rows (`sharded.split_queries`); its q_offset is slice 0's."""

    axis: str
    count: int
    rows: int


@dataclasses.dataclass(frozen=True)
class _Config:
    layout: Layout
    scale: float
    block_q: int
    block_kv: int
    backend: str  # "tpu" | "gpu" | "xla" (blockwise.py)
    interpret: bool
    q_start: int  # layout position of the first query
    q_len: int  # query rows padded to a multiple of block_q
    split: QuerySplit | None = None

    @property
    def info(self) -> BlockInfo:
        """The queries' block metadata (under a split slice 0's; its padded lengths hold for every slice)."""
        return block_info(self.layout, self.block_q, self.block_kv, q_len=self.q_len, q_start=self.q_start)

    def table(self, name: str) -> jax.Array:
        """This call's metadata array `name` (one of block_info.TABLES) in-graph, never empty; under a
        split this device's row of the stacked per-slice tables (`split_tables`), by lax.axis_index."""
        sp = self.split
        if sp is None:
            a = getattr(self.info, name)
            return jnp.asarray(a if a.size else np.zeros(1, np.int32))
        stacked = split_tables(self.layout, self.block_q, self.block_kv, sp.rows, sp.count, self.q_start).stacked
        return jnp.asarray(stacked[name])[lax.axis_index(sp.axis)]


def query_start(t: int, s: int, q_offset: int | None) -> int:
    """Layout position of the first of t queries against s keys (default: the last t), checked to fit."""
    q_start = s - t if q_offset is None else int(q_offset)
    if t <= 0 or q_start < 0 or q_start + t > s:
        raise ValueError(f"{t} queries from position {q_start} do not fit {s} keys")
    return q_start


def make_config(q, k, v, layout: Layout, *, scale, q_offset, block_q: int, block_kv: int, backend: str,
                interpret: bool = False, split: QuerySplit | None = None) -> _Config:
    """Validate q (B,Tq,Hq,D), k/v (B,S,Hkv,D) against `layout` (S == layout.length; the
    queries are layout positions q_offset .. q_offset+Tq-1, default the last Tq) and fix
    the block sizes (capped at the power-of-two rounded lengths). Under a `split` q is one
    slice (Tq == split.rows) and q_offset is slice 0's, checked by the caller (`split_queries`)."""
    b, t, hq, d = q.shape
    s = k.shape[1]
    if k.shape != v.shape or k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"k/v shape {k.shape}/{v.shape} does not fit q {q.shape}")
    if hq % k.shape[2]:
        raise ValueError(f"{hq} query heads are not a multiple of {k.shape[2]} kv heads")
    if s != layout.length:
        raise ValueError(f"key length {s} != layout length {layout.length}")
    if split is None:
        q_start = query_start(t, s, q_offset)
    elif q_offset is None or t != split.rows:
        raise ValueError(f"a query slice takes {split.rows} rows and the axis' q_offset, not {t} rows from {q_offset}")
    else:
        q_start = int(q_offset)
    bq, bk = min(block_q, _pow2_at_least(t)), min(block_kv, _pow2_at_least(s))
    return _Config(layout, float(d**-0.5 if scale is None else scale), bq, bk, backend, bool(interpret), q_start,
                   -(-t // bq) * bq, split)


def layout_ids(cfg: _Config):
    """In-graph (q_ids (q_len, 8), kv_ids (8, kv_len)) of this call's padded query / key rows."""
    info, sp = cfg.info, cfg.split
    start = last = cfg.q_start
    if sp is not None:
        start, last = start + lax.axis_index(sp.axis) * sp.rows, last + (sp.count - 1) * sp.rows
    q_ids, kv_ids = cfg.layout.device_ids(max(last + info.q_len, info.kv_len))
    return lax.dynamic_slice_in_dim(q_ids, start, info.q_len), kv_ids[:, : info.kv_len]


def _meta(cfg: _Config, transposed: bool):
    """TPU: the packed step words (one per grid step); GPU: CSR (ptr, col, partial)."""
    if cfg.backend == "tpu":
        return cfg.table("steps_t" if transposed else "steps")
    names = ("q_ptr", "q_col", "q_col_partial") if transposed else ("kv_ptr", "kv_col", "kv_col_partial")
    return tuple(cfg.table(n) for n in names)


def _to_kernel(x, total):
    """(B, T, H, D) → (B, H, total, D), zero-padded."""
    x = jnp.swapaxes(x, 1, 2)
    return jnp.pad(x, ((0, 0), (0, 0), (0, total - x.shape[2]), (0, 0)))


def _from_kernel(x, t):
    return jnp.swapaxes(x[:, :, :t], 1, 2)


def _interp(cfg: _Config):
    return cfg.interpret


def _forward(q, k, v, cfg: _Config):
    info = cfg.info
    t = q.shape[1]
    qk, kk, vk = _to_kernel(q, info.q_len), _to_kernel(k, info.kv_len), _to_kernel(v, info.kv_len)
    q_ids, kv_ids = layout_ids(cfg)
    mod = _tpu if cfg.backend == "tpu" else _gpu
    out, lse = mod.forward(qk, kk, vk, q_ids, kv_ids, _meta(cfg, False), scale=cfg.scale,
                           block_q=cfg.block_q, block_kv=cfg.block_kv, interpret=_interp(cfg))
    return _from_kernel(out, t), lse[:, :, :t]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q, k, v, cfg: _Config):
    return _forward(q, k, v, cfg)


def _attention_fwd(q, k, v, cfg):
    out, lse = _forward(q, k, v, cfg)
    return (out, lse), (q, k, v, out, lse)


def _attention_bwd(cfg: _Config, res, cts):
    q, k, v, out, lse = res
    d_out, d_lse = cts
    info = cfg.info
    t = q.shape[1]
    di = jnp.einsum("bthd,bthd->bht", d_out.astype(jnp.float32), out.astype(jnp.float32))
    di = di - d_lse.astype(jnp.float32)  # d lse / d logits = p, folded into ds = p (dp - di)
    lse_in = jnp.where(jnp.isfinite(lse), lse, jnp.inf)  # exp(s - inf) = 0 on empty rows

    def rows(x):  # (B, H, T) → (B, H, q_len)
        return jnp.pad(x, ((0, 0), (0, 0), (0, info.q_len - t)))

    q_ids, kv_ids = layout_ids(cfg)
    mod = _tpu if cfg.backend == "tpu" else _gpu
    dq, dk, dv = mod.backward(
        _to_kernel(q, info.q_len), _to_kernel(k, info.kv_len), _to_kernel(v, info.kv_len),
        _to_kernel(d_out.astype(q.dtype), info.q_len), rows(lse_in), rows(di), q_ids, kv_ids,
        _meta(cfg, False), _meta(cfg, True), scale=cfg.scale, block_q=cfg.block_q, block_kv=cfg.block_kv,
        interpret=_interp(cfg))
    tk = k.shape[1]
    return _from_kernel(dq, t), _from_kernel(dk, tk), _from_kernel(dv, tk)


_attention.defvjp(_attention_fwd, _attention_bwd)


def block_sparse_attention(q, k, v, layout: Layout, *, scale: float | None = None, backend: str = "tpu",
                           block_q: int | None = None, block_kv: int | None = None, interpret: bool = False,
                           q_offset: int | None = None, split: QuerySplit | None = None):
    """Block-sparse GQA attention following `layout`.

    q (B, Tq, Hq, D), k/v (B, S, Hkv, D) with S == layout.length and Hq % Hkv == 0; the
    queries are layout positions q_offset .. q_offset+Tq-1 (default the last Tq: a new chunk
    attending to a cache; Tq == S is self-attention). backend "tpu" or "gpu"; interpret=True
    runs the Pallas kernels on CPU. Returns (out (B,Tq,Hq,D) in q.dtype, lse (B,Hq,Tq) fp32,
    -inf on rows that see no key; out is 0 there). Differentiable in q, k, v (and through lse).
    `split`: inside `jax.shard_map`, q is this device's slice of a split query axis (`QuerySplit`).
    """
    if backend not in DEFAULT_BLOCKS:
        raise ValueError(f"unknown backend {backend!r}")
    dq_, dk_ = DEFAULT_BLOCKS[backend]
    cfg = make_config(q, k, v, layout, scale=scale, q_offset=q_offset, block_q=block_q or dq_,
                      block_kv=block_kv or dk_, backend=backend, interpret=interpret, split=split)
    return _attention(q, k, v, cfg)


def _pow2_at_least(n: int) -> int:
    return max(8, 1 << max(0, int(np.ceil(np.log2(max(n, 1))))))
