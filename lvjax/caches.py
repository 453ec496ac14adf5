"""A KV cache as a type: fixed-capacity buffers plus a fill length, with the operations families need.

    KVCache.prefilled(k, v, capacity)      a cache holding a prefill's keys/values
    cache.append(k, v)                     write new rows at `length` (inside jit/while_loop)
    cache.keep(indices)                    keep a subset of the rows (LP-Comp-style drops)
    cache.compact(pieces, capacity)        replace spans by themselves or their average pool
                                           (Video-XL-2's pooled blocks; summary memories)

Families that cache keys *before* RoPE (Video-XL-2's bi-level tree rotates the whole cache with
positions 0 … len−1 at every call, so slot i is position i) can pool and re-index keys freely.

k, v: (layers, B, capacity, kv_heads, head_dim); `length` (int32 scalar) slots are filled.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: jax.Array
    v: jax.Array
    length: jax.Array

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    @classmethod
    def prefilled(cls, k: jax.Array, v: jax.Array, capacity: int) -> "KVCache":
        """k, v (layers, B, S, Hkv, D) of S tokens, room for `capacity` ≥ S slots."""
        s = k.shape[2]
        pad = [(0, 0), (0, 0), (0, capacity - s), (0, 0), (0, 0)]
        return cls(jnp.pad(k, pad), jnp.pad(v, pad), jnp.int32(s))

    def keep(self, indices: jax.Array, capacity: int) -> "KVCache":
        """A new cache of rows `indices` (n,) int32, in that order, with room for `capacity` ≥ n slots."""
        pad = [(0, 0), (0, 0), (0, capacity - indices.shape[0]), (0, 0), (0, 0)]
        take = lambda a: jnp.pad(jnp.take(a, indices, axis=2), pad)  # noqa: E731
        return KVCache(take(self.k), take(self.v), jnp.int32(indices.shape[0]))

    def compact(self, pieces: Sequence[tuple[int, int, int]], capacity: int) -> "KVCache":
        """A new cache of the pieces (start, stop, pool) in order: rows [start, stop) as they are
        (pool 1) or average-pooled with kernel = stride = pool (torch `avg_pool1d`: a trailing
        remainder is dropped). Static plan; the new length is the sum of the pieces' rows."""
        def build(a):
            parts = []
            for start, stop, pool in pieces:
                rows = a[:, :, start:stop]
                if pool > 1:
                    n = (stop - start) // pool
                    rows = rows[:, :, : n * pool].reshape(a.shape[:2] + (n, pool) + a.shape[3:]).mean(axis=3)
                parts.append(rows)
            out = jnp.concatenate(parts, axis=2)
            return out, jnp.pad(out, [(0, 0), (0, 0), (0, capacity - out.shape[2]), (0, 0), (0, 0)])

        k_rows, k = build(self.k)
        _, v = build(self.v)
        return KVCache(k, v, jnp.int32(k_rows.shape[2]))

    def append(self, k: jax.Array, v: jax.Array) -> "KVCache":
        """Rows k, v (layers, B, T, Hkv, D) written at slots [length, length + T)."""
        at = lambda buf, new: jax.lax.dynamic_update_slice_in_dim(buf, new.astype(buf.dtype), self.length, axis=2)  # noqa: E731
        return KVCache(at(self.k, k), at(self.v, v), self.length + k.shape[2])
