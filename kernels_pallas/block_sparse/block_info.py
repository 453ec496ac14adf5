"""Block-sparse metadata: which key blocks each query block visits (and the transpose).

Built on the host from the layout's segment intervals, never from a token×token mask: a
query block is cut into pieces that lie in one segment; for a piece, the keys a query row
sees are its own segment ([start, row] when causal, the whole segment otherwise) and, among
the keys at earlier original positions, the segment range [lo, i) and the globals of its
sequence. Counting, for every key block at once, how many keys of each part fall into it
(interval overlaps and prefix sums over token ranges, per run of increasing positions)
classifies the block as empty / partial / full in O(pieces × runs × key blocks) = O(blocks)
(one run unless the layout is permuted; two for Video-XL-2's gathered time tokens).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .layout import Layout

EMPTY, PARTIAL, FULL = 0, 1, 2


# Flags of a packed step word: bits 0-3 flags, 4-17 key/other block, 18-30 row block.
STEP_PARTIAL, STEP_FIRST, STEP_LAST, STEP_SKIP = 1, 2, 4, 8
_COL_SHIFT, _ROW_SHIFT = 4, 18
MAX_COL_BLOCKS, MAX_ROW_BLOCKS = 1 << 14, 1 << 13


def unpack_step(word):
    """Packed step word → (row block, column block, flags); works on ints and jnp scalars."""
    return word >> _ROW_SHIFT, (word >> _COL_SHIFT) & (MAX_COL_BLOCKS - 1), word & 15


@dataclasses.dataclass(frozen=True, eq=False)
class BlockInfo:
    """Block-sparse metadata (int32 numpy arrays unless said otherwise).

    block_q, block_kv: block sizes; q_len, kv_len: padded lengths (multiples of the blocks);
    q_start: layout position of query row 0 (queries are positions q_start .. q_start+q_len-1;
    0 for self-attention, > 0 for a window or new chunk attending to all keys before it).
    kind: (nq, nk) int8 in {EMPTY, PARTIAL, FULL}.
    Per query block i (forward, dq), CSR: kv_ptr (nq+1,), kv_col (nnz,) visited key blocks in
    increasing order, kv_col_partial (nnz,) 1 where the mask must be applied.
    Per key block j (dk/dv), CSR of the transpose: q_ptr (nk+1,), q_col (nnz,), q_col_partial.
    steps / steps_t: the same lists flattened into one packed int32 word per grid step
    (see `unpack_step`: row block, column block, flags PARTIAL/FIRST/LAST/SKIP); a row with
    no visited block gets one SKIP step so its output (0, lse -inf) is still written.
    Padded (rows × max visits) views: counts, kv_index, kv_partial, q_counts, q_index, q_partial.
    """

    block_q: int
    block_kv: int
    q_len: int
    kv_len: int
    q_start: int
    kind: np.ndarray
    kv_ptr: np.ndarray
    kv_col: np.ndarray
    kv_col_partial: np.ndarray
    q_ptr: np.ndarray
    q_col: np.ndarray
    q_col_partial: np.ndarray
    steps: np.ndarray
    steps_t: np.ndarray

    @property
    def num_visited(self) -> int:
        return int(self.kv_ptr[-1])

    @property
    def num_blocks(self) -> int:
        return int(self.kind.size)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.kv_ptr).astype(np.int32)

    @property
    def q_counts(self) -> np.ndarray:
        return np.diff(self.q_ptr).astype(np.int32)

    @functools.cached_property
    def _padded(self):
        return _padded_lists(self.kv_ptr, self.kv_col, self.kv_col_partial)

    @functools.cached_property
    def _padded_t(self):
        return _padded_lists(self.q_ptr, self.q_col, self.q_col_partial)

    kv_index = property(lambda self: self._padded[0])
    kv_partial = property(lambda self: self._padded[1])
    q_index = property(lambda self: self._padded_t[0])
    q_partial = property(lambda self: self._padded_t[1])


def _csr(kind: np.ndarray):
    """(rows, cols) kinds → row pointers, visited columns (ascending), partial flags."""
    rows, cols = np.nonzero(kind != EMPTY)  # row-major
    counts = np.bincount(rows, minlength=kind.shape[0])
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return ptr, cols.astype(np.int32), (kind[rows, cols] == PARTIAL).astype(np.int32)


def _padded_lists(ptr, col, partial):
    """CSR → (rows, max(1, max count)) index / partial arrays; padding repeats the last index."""
    counts = np.diff(ptr)
    n = len(counts)
    width = max(1, int(counts.max()) if n else 1)
    rows = np.repeat(np.arange(n), counts)
    slot = np.arange(len(col)) - np.repeat(ptr[:-1], counts)
    index = np.zeros((n, width), np.int32)
    part = np.zeros((n, width), np.int32)
    index[rows, slot] = col
    part[rows, slot] = partial
    last = np.where(counts > 0, index[np.arange(n), np.maximum(counts - 1, 0)], 0)
    index = np.where(np.arange(width)[None, :] >= counts[:, None], last[:, None], index).astype(np.int32)
    return index, part


def _steps(ptr, col, partial):
    """CSR → packed step words, one per visited block plus one SKIP step per empty row."""
    counts = np.diff(ptr).astype(np.int64)
    n = len(counts)
    if n > MAX_ROW_BLOCKS or (len(col) and col.max() >= MAX_COL_BLOCKS):
        raise ValueError(f"too many blocks for the packed step format ({n} rows)")
    c1 = np.maximum(counts, 1)
    total = int(c1.sum())
    row = np.repeat(np.arange(n, dtype=np.int64), c1)
    slot = np.arange(total) - np.repeat(np.cumsum(c1) - c1, c1)
    nonempty = np.repeat(counts > 0, c1)
    cols = np.zeros(total, np.int64)
    parts = np.zeros(total, np.int64)
    cols[nonempty] = col
    parts[nonempty] = partial
    # An empty row reuses the previous step's column block: no new copy is issued.
    if total:
        idx = np.where(nonempty, np.arange(total), -1)
        idx = np.maximum.accumulate(idx)
        cols = np.where(nonempty, cols, np.where(idx >= 0, cols[np.maximum(idx, 0)], 0))
    flags = (parts * STEP_PARTIAL + (slot == 0) * STEP_FIRST + (slot == np.repeat(c1, c1) - 1) * STEP_LAST
             + (~nonempty) * STEP_SKIP)
    return ((row << _ROW_SHIFT) | (cols << _COL_SHIFT) | flags).astype(np.int32)


def _overlap(a0, a1, b0, b1):
    """Length of [a0,a1) ∩ [b0,b1), vectorised."""
    return np.maximum(0, np.minimum(a1, b1) - np.maximum(a0, b0))


def _runs(layout: Layout) -> list[tuple[int, int]]:
    """Token ranges [r0, r1) of the maximal stretches of segments whose original positions keep
    increasing along the layout (one run for an unpermuted layout)."""
    runs: list[list[int]] = []
    last_end = None
    for seg, a in zip(layout.segments, layout.starts[:-1]):
        if not seg.length:
            continue
        if last_end is None or seg.pos < last_end:
            runs.append([int(a), int(a)])
        runs[-1][1] = int(a) + seg.length
        last_end = seg.pos + seg.length
    return [(a, b) for a, b in runs]


def classify_blocks(layout: Layout, block_q: int, block_kv: int, q_len: int, kv_len: int, q_start: int = 0) -> np.ndarray:
    """(nq, nk) int8 block kinds from the segment intervals (no token×token mask); query block i
    holds layout positions q_start + [i·block_q, (i+1)·block_q).

    A query row at original position p in segment s sees: its own segment (up to p when causal),
    and among the keys with position ≤ p those of segments [lo, s) and the globals of its sequence.
    Along a run of increasing positions (`_runs`) the keys with position ≤ p are a prefix of the run,
    so per key block that count is a few interval overlaps and prefix sums of the global indicator.
    The seen set grows with p, so a piece's first row gives "full" and its last row "empty"."""
    nq, nk = q_len // block_q, kv_len // block_kv
    segs = layout.segments
    starts = layout.starts
    n = layout.length
    pos = layout.token_ids()["pos"][:n]
    runs = [(a, b, pos[a:b]) for a, b in _runs(layout)]
    kv0 = np.arange(nk, dtype=np.int64) * block_kv
    kv1 = kv0 + block_kv
    # Per sequence, prefix sums of its global-token indicator over the token span of that
    # sequence (O(span) each). A sequence may be interrupted by padding (the answer path's
    # `[prefix][padding][question]`): its globals are those of every segment with the same `seq`.
    by_seq: dict[int, list[int]] = {}
    for j, seg in enumerate(segs):
        by_seq.setdefault(seg.seq, []).append(j)
    glob_cum: dict[int, tuple[int, np.ndarray]] = {}

    def glob_count(seq, t0_, t1_):
        """Global tokens of sequence `seq` in tokens [t0_, t1_) ∩ each key block (vector over blocks)."""
        if seq not in glob_cum:
            mine = by_seq[seq]
            t0 = int(starts[mine[0]])
            tok = np.zeros(int(starts[mine[-1] + 1]) - t0, np.int64)
            for j in mine:
                if segs[j].is_global:
                    tok[starts[j] - t0: starts[j + 1] - t0] = 1
            glob_cum[seq] = t0, np.concatenate([[0], np.cumsum(tok)])
        t0, cum = glob_cum[seq]
        lo = np.clip(np.maximum(kv0, t0_) - t0, 0, len(cum) - 1)
        hi = np.clip(np.minimum(kv1, t1_) - t0, lo, len(cum) - 1)
        return cum[hi] - cum[lo]

    def seen(s: int, p: int) -> np.ndarray:
        """Keys per key block a row of segment s at original position p sees outside its own segment."""
        seg = segs[s]
        lo_t, own_t, own_e = starts[seg.lo], starts[s], starts[s + 1]
        out = np.zeros(nk, np.int64)
        for r0, r1, rpos in runs:
            c1 = r0 + int(np.searchsorted(rpos, p, side="right"))  # keys [r0, c1) have position ≤ p
            if c1 == r0:
                continue
            a, b = max(r0, lo_t), min(c1, own_t)
            out += glob_count(seg.seq, r0, c1) - glob_count(seg.seq, max(r0, own_t), min(c1, own_e))
            if b > a:
                out += _overlap(kv0, kv1, a, b) - glob_count(seg.seq, a, b)
        return out

    kind = np.zeros((nq, nk), np.int8)
    for i in range(nq):
        q0, q1 = q_start + i * block_q, q_start + (i + 1) * block_q
        empty = np.ones(nk, bool)
        full_all = np.ones(nk, bool)
        covered = 0
        s_first = int(np.searchsorted(starts, q0, side="right")) - 1
        s = max(s_first, 0)
        while s < len(segs) and starts[s] < min(q1, n):
            seg = segs[s]
            a, b = max(q0, starts[s]), min(q1, starts[s + 1])  # rows of this piece
            if b <= a or seg.seq < 0:  # padding rows see nothing: blocks they touch cannot be full
                s += 1
                continue
            covered += b - a
            if seg.causal:
                own_min = _overlap(kv0, kv1, starts[s], a + 1)
                own_max = _overlap(kv0, kv1, starts[s], b)
            else:
                own_min = own_max = _overlap(kv0, kv1, starts[s], starts[s + 1])
            empty &= (seen(s, int(pos[b - 1])) + own_max) == 0
            full_all &= (seen(s, int(pos[a])) + own_min) == block_kv
            s += 1
        if covered < block_q:  # padding rows (inside the layout or past its end)
            full_all[:] = False
        kind[i] = np.where(empty, EMPTY, np.where(full_all, FULL, PARTIAL))
    return kind


@functools.lru_cache(maxsize=128)
def block_info(layout: Layout, block_q: int, block_kv: int, q_len: int | None = None, kv_len: int | None = None,
               q_start: int = 0) -> BlockInfo:
    """Cached metadata for `layout` padded to multiples of (block_q, block_kv), the queries being
    the q_len layout positions from q_start (rows past the layout are padding; all of them may be,
    as on the last devices of a short query axis split over many, `split_tables`).

    q_len / kv_len default to the rest of the layout from q_start / the layout length, rounded
    up to the block size.
    """
    n = layout.length
    q_len = -(-(n - q_start) // block_q) * block_q if q_len is None else q_len
    kv_len = -(-n // block_kv) * block_kv if kv_len is None else kv_len
    if q_start < 0 or q_len <= 0 or q_len % block_q or kv_len % block_kv or kv_len < n:
        raise ValueError(f"bad padded lengths {q_len} (queries from {q_start}), {kv_len} for {n} tokens and blocks "
                         f"{block_q}, {block_kv}")
    kind = classify_blocks(layout, block_q, block_kv, q_len, kv_len, q_start)
    kv_ptr, kv_col, kv_col_partial = _csr(kind)
    q_ptr, q_col, q_col_partial = _csr(np.ascontiguousarray(kind.T))
    arrs = dict(kind=kind, kv_ptr=kv_ptr, kv_col=kv_col, kv_col_partial=kv_col_partial, q_ptr=q_ptr, q_col=q_col,
                q_col_partial=q_col_partial, steps=_steps(kv_ptr, kv_col, kv_col_partial),
                steps_t=_steps(q_ptr, q_col, q_col_partial))
    for a in arrs.values():
        a.setflags(write=False)
    return BlockInfo(block_q, block_kv, q_len, kv_len, q_start, **arrs)


TABLES = ("steps", "steps_t", "kv_ptr", "kv_col", "kv_col_partial", "q_ptr", "q_col", "q_col_partial")


@dataclasses.dataclass(frozen=True, eq=False)
class SplitTables:
    """Block metadata of a query axis split into `len(infos)` slices of `rows` rows each.

    infos[i]: `block_info` of slice i, the queries at layout positions q_start + i·rows + [0, q_len)
    (q_len: `rows` rounded up to block_q), so slice i visits only its own blocks.
    stacked[name] (name in TABLES): (n_slices, width) int32, row i = infos[i].<name> padded to the
    longest (width ≥ 1). Step words are padded with no-op steps: the slice's last word with only
    SKIP set (same blocks, so nothing is loaded; nothing initialised, accumulated or finalised —
    the forward rewrites its row unchanged, the backward adds exact zeros); CSR columns with zeros
    past the row pointers' end (never read). Pointer arrays have the same length in every slice.
    """

    infos: tuple[BlockInfo, ...]
    stacked: dict

    @property
    def visited(self) -> list[int]:
        """Visited (non-empty) blocks per slice."""
        return [i.num_visited for i in self.infos]


def _pad_rows(rows: list[np.ndarray], fill: list[np.ndarray]) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    out = np.stack([np.concatenate([r, np.repeat(f, width - len(r))]) for r, f in zip(rows, fill)]).astype(np.int32)
    out.setflags(write=False)
    return out


def _no_op(words: np.ndarray) -> np.ndarray:
    """The padding word of a step list (never empty: every row has a step): its last step with the
    flags replaced by SKIP."""
    return (words[-1:] & ~np.int32(15)) | STEP_SKIP


@functools.lru_cache(maxsize=64)
def split_tables(layout: Layout, block_q: int, block_kv: int, rows: int, n_slices: int,
                 q_start: int = 0) -> SplitTables:
    """Cached `SplitTables` of the queries q_start + [0, n_slices·rows) cut into n_slices slices of
    `rows` rows (one per device of a sequence-split query axis; keys: the whole layout)."""
    q_len = -(-rows // block_q) * block_q
    infos = tuple(block_info(layout, block_q, block_kv, q_len=q_len, q_start=q_start + i * rows)
                  for i in range(n_slices))
    zero = np.zeros(1, np.int32)
    stacked = {name: _pad_rows([getattr(i, name) for i in infos],
                               [_no_op(getattr(i, name)) if name.startswith("steps") else zero for i in infos])
               for name in TABLES}
    return SplitTables(infos, stacked)


def brute_force_kinds(mask: np.ndarray, block_q: int, block_kv: int) -> np.ndarray:
    """(nq, nk) block kinds from a dense (q_len, kv_len) mask. For tests."""
    tq, tk = mask.shape
    m = mask.reshape(tq // block_q, block_q, tk // block_kv, block_kv)
    cnt = m.sum(axis=(1, 3))
    return np.where(cnt == 0, EMPTY, np.where(cnt == block_q * block_kv, FULL, PARTIAL)).astype(np.int8)
