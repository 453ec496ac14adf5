"""Block-sparse attention with its query axis split over a mesh axis (sequence parallelism).

`split_queries(kernel, q, k, v, axis=..., count=n)` runs `blockwise_attention` or
`block_sparse_attention` under `jax.shard_map`: q (B, Tq, Hq, D) split on Tq over the mesh axis
`axis` of n devices (optionally B and Hq over other axes), k/v (B, S, Hkv, D) whole on every
device (replicated over `axis`: the caller's all-gather). Tq is zero-padded to n·L, L = ⌈Tq / n⌉;
device i holds the queries at layout positions q_offset + i·L + [0, L) — rows past the layout are
padding (they see nothing), rows past Tq are cut from the output. Gradients: dq stays split, and
the shard_map transpose sums dk / dv over the devices. `check_vma=False`: the kernels' loop carries
start from unvarying constants, which the varying-axis check would reject; without it shard_map's
transpose sums the cotangents of inputs replicated over an axis itself.

Each device visits only the blocks of its own rows: `block_info.split_tables` builds the n tables
on the host (`block_info` with q_start = q_offset + i·L) and stacks them into (n, width) arrays
padded with no-op steps; a device takes its row with `lax.axis_index(axis)` (`api._Config.table`).
By axis index rather than as a sharded operand: the tables stay static configuration, built once
per layout and cached like `block_info`, and the kernels, their operands and custom VJPs are the
same as unsplit; the constant is one int32 word per visited block. Every device's trip count is
the longest table's: the split balances rows, not work (causal: the last device's rows see the
most keys, ≈ (2n−1)/n² of the blocks against 1/n on average).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from .api import QuerySplit, query_start


def split_queries(kernel: Callable, q, k, v, *, axis: str, count: int, q_offset: int | None = None,
                  batch_axes: Sequence[str] = (), head_axes: Sequence[str] = ()):
    """`kernel(q, k, v, q_offset=, split=) → (out, lse)` with q split on Tq over mesh axis `axis` (count
    devices; the mesh set by `jax.set_mesh`), B over `batch_axes`, Hq and Hkv over `head_axes` (their
    sizes must divide B / Hkv). q (B, Tq, Hq, D), k/v (B, S, Hkv, D); the queries are layout positions
    q_offset .. q_offset+Tq-1 (default the last Tq). Returns (out (B, Tq, Hq, D), lse (B, Hq, Tq)).
    """
    t = q.shape[1]
    q_start = query_start(t, k.shape[1], q_offset)
    rows = -(-t // count)
    q = jnp.pad(q, ((0, 0), (0, rows * count - t), (0, 0), (0, 0)))
    batch, heads = tuple(batch_axes) or None, tuple(head_axes) or None
    q_spec, kv_spec = P(batch, axis, heads, None), P(batch, None, heads, None)
    split = QuerySplit(axis, count, rows)

    def body(q, k, v):
        return kernel(q, k, v, q_offset=q_start, split=split)

    out, lse = jax.shard_map(body, in_specs=(q_spec, kv_spec, kv_spec), out_specs=(q_spec, P(batch, heads, axis)),
                             check_vma=False)(q, k, v)
    return out[:, :t], lse[:, :, :t]
