"""A KV cache as a type: fixed-capacity buffers plus a fill length, with the operations families need.

    KVCache.prefilled(k, v, capacity, valid)   a cache holding a prefill's keys/values
    cache.append(k, v, valid)                  write new rows at `length` (inside jit/while_loop)
    cache.written(k, v, t, valid)              the same, for rows attention layers wrote in place
    cache.grown(capacity)                      more free slots (Video-XL's memory before the text)
    cache.keep(indices, capacity)              keep a subset of the rows (LP-Comp-style drops)
    cache.compact(pieces, capacity)            replace spans by themselves or their average pool
                                               (Video-XL-2's pooled blocks; summary memories)

k, v: either arrays stacked over layers (layers, B, capacity, Hkv, D) — Video-XL-2 — or tuples of
per-layer (B, Hkv, capacity, D) arrays, heads before slots, which a decode step reads and writes
in place — VideoChat-Flash, one cache per LP-Comp stage (stages differ in length). Slots are
axis 2 in both. `length` (int32 scalar) slots are filled; `valid` (B, capacity) bool, when
given, masks padding slots anywhere (else slots < length are valid). Video-XL's window memory
[sink | summaries | text] is a stacked cache appended to step by step (`append(..., n=)`).

Families that cache keys *before* RoPE (Video-XL-2's bi-level tree rotates the whole cache with
positions 0 … len−1 at every call, so slot i is position i) can pool and re-index keys freely.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp


def _pad_slots(a: jax.Array, capacity: int) -> jax.Array:
    """`a` padded with zeros (False) along the slot axis (2, or 1 for a (B, S) mask) to `capacity`."""
    axis = 1 if a.ndim == 2 else 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, capacity - a.shape[axis])
    return jnp.pad(a, pad)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: jax.Array | tuple[jax.Array, ...]
    v: jax.Array | tuple[jax.Array, ...]
    length: jax.Array
    valid: jax.Array | None = None

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.k)[0].shape[2]

    @classmethod
    def prefilled(cls, k, v, capacity: int, valid: jax.Array | None = None) -> "KVCache":
        """k, v of S slots (stacked or per layer), room for `capacity` ≥ S; `valid` (B, S) masks padding."""
        s = jax.tree.leaves(k)[0].shape[2]
        pad = lambda a: _pad_slots(a, capacity)  # noqa: E731
        return cls(jax.tree.map(pad, k), jax.tree.map(pad, v), jnp.int32(s), None if valid is None else pad(valid))

    def keep(self, indices: jax.Array, capacity: int) -> "KVCache":
        """A new cache of rows `indices` (n,) int32, in that order, with room for `capacity` ≥ n slots."""
        def take(a):
            return _pad_slots(jnp.take(a, indices, axis=1 if a.ndim == 2 else 2), capacity)

        return KVCache(jax.tree.map(take, self.k), jax.tree.map(take, self.v), jnp.int32(indices.shape[0]),
                       None if self.valid is None else take(self.valid))

    def compact(self, pieces: Sequence[tuple[int, int, int]], capacity: int) -> "KVCache":
        """A new cache of the pieces (start, stop, pool) in order: rows [start, stop) as they are
        (pool 1) or average-pooled with kernel = stride = pool (torch `avg_pool1d`: a trailing
        remainder is dropped). Static plan; the new length is the sum of the pieces' rows."""
        if self.valid is not None:
            raise ValueError("compact pools rows: a cache with padding slots (valid) cannot be compacted")

        def build(a):
            parts = []
            for start, stop, pool in pieces:
                rows = a[:, :, start:stop]
                if pool > 1:
                    n = (stop - start) // pool
                    rows = rows[:, :, : n * pool].reshape(a.shape[:2] + (n, pool) + a.shape[3:]).mean(axis=3)
                parts.append(rows)
            return jnp.concatenate(parts, axis=2)

        k, v = jax.tree.map(build, self.k), jax.tree.map(build, self.v)
        n = jax.tree.leaves(k)[0].shape[2]
        pad = lambda a: _pad_slots(a, capacity)  # noqa: E731
        return KVCache(jax.tree.map(pad, k), jax.tree.map(pad, v), jnp.int32(n))

    def append(self, k, v, valid: jax.Array | None = None, n: jax.Array | int | None = None) -> "KVCache":
        """Rows k, v of T slots (the cache's form) written at slots [length, length + T); `valid`
        (B, T) marks the real ones (default all) in a masked cache. `n` (≤ T, may be traced): only
        the first n rows count and `length` advances by n — the rest is scratch the next append
        overwrites (a step whose kept rows vary in number under one static shape)."""
        def at(buf, new):
            return jax.lax.dynamic_update_slice_in_dim(buf, new.astype(buf.dtype), self.length, axis=2)

        t = jax.tree.leaves(k)[0].shape[2]
        if n is not None:
            if self.valid is not None:
                raise ValueError("append(n=...) counts rows by length: not for a cache with padding slots (valid)")
            return KVCache(jax.tree.map(at, self.k, k), jax.tree.map(at, self.v, v), self.length + jnp.int32(n))
        return self.written(jax.tree.map(at, self.k, k), jax.tree.map(at, self.v, v), t, valid)

    def grown(self, capacity: int) -> "KVCache":
        """The same cache with room for `capacity` ≥ `self.capacity` slots (new slots empty)."""
        pad = lambda a: _pad_slots(a, capacity)  # noqa: E731
        return KVCache(jax.tree.map(pad, self.k), jax.tree.map(pad, self.v), self.length,
                       None if self.valid is None else pad(self.valid))

    def written(self, k, v, t: int, valid: jax.Array | None = None) -> "KVCache":
        """This cache once `t` new rows sit at slots [length, length + t) of the buffers k, v (written
        in place by attention layers that read the old buffers first); `valid` as in `append`."""
        mask = self.valid
        if mask is not None:
            new = jnp.ones((mask.shape[0], t), bool) if valid is None else valid
            mask = jax.lax.dynamic_update_slice_in_dim(mask, new, self.length, axis=1)
        return KVCache(k, v, self.length + t, mask)
