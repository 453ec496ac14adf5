"""A KV cache of un-rotated keys, with the operations Video-XL-2's decoding needs.

Video-XL-2's bi-level tree (eval/lvu/w_chunk_bilevel, its local modeling_qwen2.py) caches keys
*before* RoPE and rotates the whole cache with positions 0 … len−1 at every call, so slot i
is always position i. Pooling keys is then pooling un-rotated keys, and a compacted cache is
re-indexed for free. For contiguous caches (dense decoding) this is the ordinary KV cache.

    KVCache.prefilled(k, v, capacity)      a cache holding a prefill's keys/values
    cache.compact(pieces)                  keep / average-pool spans of rows (static plan)
    cache.append(k, v)                     write new rows at `length` (inside jit/while_loop)

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
