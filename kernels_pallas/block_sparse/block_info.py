"""Block-sparse metadata: which key blocks each query block visits (and the transpose).

Built on the host from the layout's segment intervals, never from a token×token mask: a
query block is cut into pieces that lie in one segment; for a piece, the keys a query row
sees are a fixed part (segment range [lo, i) plus earlier globals of the sequence) and its
own segment ([start, row] when causal, the whole segment otherwise). Counting, for every key
block at once, how many keys of each part fall into it (prefix sums over token ranges)
classifies the block as empty / partial / full in O(pieces × key blocks) = O(blocks).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .layout import Layout

EMPTY, PARTIAL, FULL = 0, 1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class BlockInfo:
    """Padded per-block visit lists (int32 numpy arrays).

    block_q, block_kv: block sizes; q_len, kv_len: padded lengths (multiples of the blocks).
    kind: (nq, nk) int8 in {EMPTY, PARTIAL, FULL}.
    Forward / dq (per query block i): counts (nq,), kv_index (nq, max_kv) the visited key
    blocks in increasing order, kv_partial (nq, max_kv) 1 where the mask must be applied.
    Padded entries repeat the last visited index (no new DMA) with partial = 0.
    dk/dv (per key block j): q_counts (nk,), q_index (nk, max_q), q_partial (nk, max_q).
    """

    block_q: int
    block_kv: int
    q_len: int
    kv_len: int
    kind: np.ndarray
    counts: np.ndarray
    kv_index: np.ndarray
    kv_partial: np.ndarray
    q_counts: np.ndarray
    q_index: np.ndarray
    q_partial: np.ndarray

    @property
    def num_visited(self) -> int:
        return int(self.counts.sum())

    @property
    def num_blocks(self) -> int:
        return int(self.kind.size)


def _visit_lists(kind: np.ndarray):
    n, m = kind.shape
    counts = (kind != EMPTY).sum(1).astype(np.int32)
    width = max(1, int(counts.max()) if n else 1)
    index = np.zeros((n, width), np.int32)
    partial = np.zeros((n, width), np.int32)
    rows, cols = np.nonzero(kind != EMPTY)  # row-major: cols ascending within a row
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    index[rows, slot] = cols
    partial[rows, slot] = (kind[rows, cols] == PARTIAL)
    # Pad with the last visited block so the pipeline issues no new copy.
    last = np.where(counts > 0, index[np.arange(n), np.maximum(counts - 1, 0)], 0)
    pad = np.arange(width)[None, :] >= counts[:, None]
    index = np.where(pad, last[:, None], index).astype(np.int32)
    return counts, index, partial.astype(np.int32)


def _overlap(a0, a1, b0, b1):
    """Length of [a0,a1) ∩ [b0,b1), vectorised."""
    return np.maximum(0, np.minimum(a1, b1) - np.maximum(a0, b0))


def classify_blocks(layout: Layout, block_q: int, block_kv: int, q_len: int, kv_len: int) -> np.ndarray:
    """(nq, nk) int8 block kinds from the segment intervals (no token×token mask)."""
    nq, nk = q_len // block_q, kv_len // block_kv
    segs = layout.segments
    starts = layout.starts
    n = layout.length
    kv0 = np.arange(nk, dtype=np.int64) * block_kv
    kv1 = kv0 + block_kv
    # Prefix sums of the per-token global indicator (O(length), built from the segments).
    glob_tok = np.repeat(np.array([seg.is_global for seg in segs], np.int64),
                         np.array([seg.length for seg in segs], np.int64))
    glob_cum = np.concatenate([[0], np.cumsum(glob_tok)])

    def glob_count(t0, t1):
        """Global tokens in token range [t0, t1) ∩ each key block (vector over blocks)."""
        lo = np.clip(np.maximum(kv0, t0), 0, n)
        hi = np.clip(np.minimum(kv1, t1), 0, n)
        return np.where(hi > lo, glob_cum[hi] - glob_cum[np.minimum(lo, hi)], 0)

    seq_start = []
    for s, seg in enumerate(segs):
        if s == 0 or segs[s - 1].seq != seg.seq:
            cur = s
        seq_start.append(cur)

    kind = np.zeros((nq, nk), np.int8)
    fixed_cache: dict[int, np.ndarray] = {}
    for i in range(nq):
        q0, q1 = i * block_q, (i + 1) * block_q
        empty = np.ones(nk, bool)
        full_all = np.ones(nk, bool)
        covered = 0
        s_first = int(np.searchsorted(starts, q0, side="right")) - 1
        s = max(s_first, 0)
        while s < len(segs) and starts[s] < min(q1, n):
            seg = segs[s]
            a, b = max(q0, starts[s]), min(q1, starts[s + 1])  # rows of this piece
            if b <= a:
                s += 1
                continue
            if seg.seq < 0:  # padding rows see nothing: blocks they touch cannot be full
                s += 1
                continue
            covered += b - a
            fixed = fixed_cache.get(s)
            if fixed is None:
                lo_t, own_t = starts[seg.lo], starts[s]
                fixed = _overlap(kv0, kv1, lo_t, own_t) + glob_count(starts[seq_start[s]], lo_t)
                fixed_cache[s] = fixed
            if seg.causal:
                own_min = _overlap(kv0, kv1, starts[s], a + 1)
                own_max = _overlap(kv0, kv1, starts[s], b)
            else:
                own_min = own_max = _overlap(kv0, kv1, starts[s], starts[s + 1])
            empty &= (fixed + own_max) == 0
            full_all &= (fixed + own_min) == block_kv
            s += 1
        if covered < block_q:  # padding rows (inside the layout or past its end)
            full_all[:] = False
        kind[i] = np.where(empty, EMPTY, np.where(full_all, FULL, PARTIAL))
    return kind


@functools.lru_cache(maxsize=128)
def block_info(layout: Layout, block_q: int, block_kv: int, q_len: int | None = None, kv_len: int | None = None) -> BlockInfo:
    """Cached metadata for `layout` padded to multiples of (block_q, block_kv).

    q_len / kv_len default to the layout length rounded up to the block size.
    """
    n = layout.length
    q_len = -(-n // block_q) * block_q if q_len is None else q_len
    kv_len = -(-n // block_kv) * block_kv if kv_len is None else kv_len
    if q_len % block_q or kv_len % block_kv or q_len < n or kv_len < n:
        raise ValueError(f"bad padded lengths {q_len}, {kv_len} for {n} tokens and blocks {block_q}, {block_kv}")
    kind = classify_blocks(layout, block_q, block_kv, q_len, kv_len)
    counts, kv_index, kv_partial = _visit_lists(kind)
    q_counts, q_index, q_partial = _visit_lists(np.ascontiguousarray(kind.T))
    arrs = dict(kind=kind, counts=counts, kv_index=kv_index, kv_partial=kv_partial,
                q_counts=q_counts, q_index=q_index, q_partial=q_partial)
    for a in arrs.values():
        a.setflags(write=False)
    return BlockInfo(block_q, block_kv, q_len, kv_len, **arrs)


def brute_force_kinds(mask: np.ndarray, block_q: int, block_kv: int) -> np.ndarray:
    """(nq, nk) block kinds from a dense (q_len, kv_len) mask. For tests."""
    tq, tk = mask.shape
    m = mask.reshape(tq // block_q, block_q, tk // block_kv, block_kv)
    cnt = m.sum(axis=(1, 3))
    return np.where(cnt == 0, EMPTY, np.where(cnt == block_q * block_kv, FULL, PARTIAL)).astype(np.int8)
