"""Attention layouts: a compact, hashable description of who attends to whom.

A `Layout` is a tuple of contiguous `Segment`s covering tokens [0, length). Each segment says
which packed sequence it belongs to (`seq`, -1 = padding), whether it is causal inside itself,
whether it is *global* (visible to every later token of its sequence) and `lo`, the index of
the first earlier segment it sees in full (segments lo .. i-1; lo == i sees none of them).

Every token also has an original position `pos`: a segment's tokens are positions `pos` …
`pos + length − 1` of the unpermuted sequence (default: its own offset, so pos is the layout index).
A query token q in segment i may attend to a key token k in segment j iff both are in the same
(non-padding) sequence and

    j == i and (not causal_i or pos_k <= pos_q)                  # its own segment
    or pos_k <= pos_q and (lo_i <= j < i or global_j)            # earlier segments in range, globals

With positions equal to the layout index this is "a range of earlier segments plus the earlier
globals". A *permuted* layout (positions not the layout index) gathers tokens so that blocks can
be skipped, e.g. Video-XL-2's time tokens, which everything sees and which see everything before
them, into one run after the visual chunks (`chunk_sparse`); `attend` permutes q/k/v by `order`
before the kernels and back after, so the kernels only ever see the layout's order.

This covers causal text (one causal segment), shared prefixes (a global segment), video
segments that attend within themselves (bidirectional or causal) and optionally to the
previous k segments (Video-XL-2 chunk-sparse prefill), suffix/question tokens that attend to
everything before them (lo = first segment of the sequence), QC-Comp windows with their own
question copies, packed independent sequences and padding.

Per-token integer ids are computed lazily (O(length), never length²) from the segments and
`mask_fn(q_ids, kv_ids)` evaluates the rule elementwise; it runs in numpy on the host and
in jnp inside the kernels for partially masked blocks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

# Field order of the packed id arrays used by the kernels.
Q_FIELDS = ("seq", "seg", "lo", "causal", "pos")
KV_FIELDS = ("seq", "seg", "glob", "pos")
N_ID_FIELDS = 8  # fields are padded to 8 rows/columns (one TPU sublane tile)


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of `length` tokens. `lo` is an absolute segment index (see module docstring)."""

    length: int
    seq: int = 0
    lo: int = -1  # -1: resolved by Layout to "this segment itself" (sees no earlier segment range)
    causal: bool = True
    is_global: bool = False
    pos: int = -1  # original position of the first token; -1: resolved by Layout to the segment's offset


@dataclasses.dataclass(frozen=True)
class Layout:
    """Hashable attention layout over `length` tokens; see the module docstring."""

    segments: tuple[Segment, ...]

    def __post_init__(self):
        segs, offset = [], 0
        for i, s in enumerate(self.segments):
            if s.length < 0:
                raise ValueError(f"segment {i} has negative length {s.length}")
            lo = i if s.lo < 0 else s.lo
            if lo > i:
                raise ValueError(f"segment {i}: lo={lo} lies after the segment")
            segs.append(dataclasses.replace(s, lo=lo, pos=offset if s.pos < 0 else s.pos))
            offset += s.length
        # A segment's visible range must stay in its own sequence: lo within its run of same-seq segments.
        run_start = 0
        for i, s in enumerate(segs):
            if i and segs[i - 1].seq != s.seq:
                run_start = i
            if s.lo < run_start:
                j = run_start - 1
                raise ValueError(f"segment {i} (seq {s.seq}) sees segment {j} of seq {segs[j].seq}")
        object.__setattr__(self, "segments", tuple(segs))

    # ---- basic facts -------------------------------------------------------------------
    @property
    def length(self) -> int:
        return int(sum(s.length for s in self.segments))

    @functools.cached_property
    def starts(self) -> np.ndarray:
        """(n_segments + 1,) int64 token offsets of the segment boundaries."""
        return np.concatenate([[0], np.cumsum([s.length for s in self.segments])]).astype(np.int64)

    @functools.cached_property
    def permuted(self) -> bool:
        """Whether some token's original position differs from its layout index."""
        return any(s.pos != int(a) for s, a in zip(self.segments, self.starts[:-1]) if s.length)

    @functools.cached_property
    def order(self) -> np.ndarray:
        """(length,) int64: the original position of each layout token (x_layout = x_original[order]).
        Raises ValueError unless the positions are a permutation of 0 … length − 1."""
        pos = self.token_ids()["pos"].astype(np.int64)
        if not np.array_equal(np.sort(pos), np.arange(self.length)):
            raise ValueError("the layout's token positions are not a permutation of 0 … length − 1")
        pos.setflags(write=False)
        return pos

    @functools.cached_property
    def inverse(self) -> np.ndarray:
        """(length,) int64: the layout index of each original position (x_original = x_layout[inverse])."""
        inv = np.argsort(self.order)
        inv.setflags(write=False)
        return inv

    def padded(self, total: int) -> "Layout":
        """This layout followed by padding tokens up to `total` tokens."""
        if total < self.length:
            raise ValueError(f"cannot pad a layout of {self.length} tokens to {total}")
        if total == self.length:
            return self
        return Layout(self.segments + (Segment(total - self.length, seq=-1, causal=False, pos=self.length),))

    # ---- per-token ids -----------------------------------------------------------------
    def token_ids(self, total: int | None = None) -> dict[str, np.ndarray]:
        """Per-token int32 ids (each (total,)), tokens past `length` are padding."""
        return _token_ids(self, self.length if total is None else int(total))

    def q_ids(self, total: int | None = None) -> np.ndarray:
        """(total, 8) int32, columns in `Q_FIELDS` order (kernel input for query blocks)."""
        ids = self.token_ids(total)
        out = np.zeros((len(ids["pos"]), N_ID_FIELDS), np.int32)
        for c, f in enumerate(Q_FIELDS):
            out[:, c] = ids[f]
        return out

    def kv_ids(self, total: int | None = None) -> np.ndarray:
        """(8, total) int32, rows in `KV_FIELDS` order (kernel input for key blocks)."""
        ids = self.token_ids(total)
        out = np.zeros((N_ID_FIELDS, len(ids["pos"])), np.int32)
        for r, f in enumerate(KV_FIELDS):
            out[r] = ids[f]
        return out

    def segment_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Compact description: (ends (n_seg,) int32 segment end offsets, fields (n_seg + 1, 6)
        int32 columns seq, seg, lo, causal, glob, pos − offset; the extra last row describes padding)."""
        segs = self.segments
        n = len(segs)
        ends = np.asarray(self.starts[1:], np.int32)
        rows = [(s.seq, i, s.lo, int(s.causal), int(s.is_global), s.pos - int(a))
                for i, (s, a) in enumerate(zip(segs, self.starts[:-1]))]
        rows.append((-1, n, n, 0, 0, 0))
        return ends, np.asarray(rows, np.int32).reshape(n + 1, 6)

    def device_ids(self, total: int):
        """jnp version of (q_ids (total, 8), kv_ids (8, total)), built in-graph from the
        segment table (O(n_segments) constants, O(total) work; no large host constants)."""
        import jax.numpy as jnp

        ends, table = self.segment_table()
        pos = jnp.arange(total, dtype=jnp.int32)
        seg = jnp.searchsorted(jnp.asarray(ends), pos, side="right").astype(jnp.int32)
        f = jnp.asarray(table)[seg]  # (total, 6): seq, seg, lo, causal, glob, pos − offset
        col = {"seq": f[:, 0], "seg": f[:, 1], "lo": f[:, 2], "causal": f[:, 3], "glob": f[:, 4], "pos": pos + f[:, 5]}
        zero = jnp.zeros_like(pos)
        q_cols = [col[n] for n in Q_FIELDS] + [zero] * (N_ID_FIELDS - len(Q_FIELDS))
        kv_rows = [col[n] for n in KV_FIELDS] + [zero] * (N_ID_FIELDS - len(KV_FIELDS))
        return jnp.stack(q_cols, axis=1), jnp.stack(kv_rows, axis=0)

    def dense_mask(self, total: int | None = None) -> np.ndarray:
        """(total, total) bool mask by original position, True = may attend (tokens past the layout are
        padding at their own index). For tests and small sizes only; `mask_rows` is the layout's order."""
        total = self.length if total is None else total
        return self.original_mask(0, total, total)

    def original_mask(self, start: int = 0, stop: int | None = None, total: int | None = None) -> np.ndarray:
        """(stop − start, total) bool rows [start, stop) of the mask with queries and keys indexed by
        original position (= `mask_rows` when the layout is not permuted)."""
        total = self.length if total is None else total
        stop = total if stop is None else stop
        if not self.permuted:
            return self.mask_rows(start, stop, total)
        n = max(stop, total)
        ids = self.token_ids(n)
        inv = np.concatenate([self.inverse, np.arange(self.length, n)])
        q = {f: ids[f][inv[start:stop], None] for f in Q_FIELDS}
        kv = {f: ids[f][None, inv[:total]] for f in KV_FIELDS}
        return np.asarray(mask_fn(q, kv))

    def mask_rows(self, start: int, stop: int, total: int | None = None) -> np.ndarray:
        """(stop - start, total) bool rows [start, stop) of the mask in the layout's order (queries at
        those layout indices against the first `total` keys; what the kernels apply)."""
        ids = self.token_ids(max(stop, self.length if total is None else total))
        total = self.length if total is None else total
        q = {f: ids[f][start:stop, None] for f in Q_FIELDS}
        kv = {f: ids[f][None, :total] for f in KV_FIELDS}
        return np.asarray(mask_fn(q, kv))


@functools.lru_cache(maxsize=64)
def _token_ids(layout: Layout, total: int) -> dict[str, np.ndarray]:
    n = layout.length
    if total < n:
        raise ValueError(f"total {total} < layout length {n}")
    lens = np.array([s.length for s in layout.segments] + [total - n], np.int64)
    segs = list(layout.segments) + [Segment(total - n, seq=-1, lo=len(layout.segments), causal=False, pos=n)]
    rep = lambda vals: np.repeat(np.asarray(vals, np.int64), lens).astype(np.int32)  # noqa: E731
    ids = {
        "seq": rep([s.seq for s in segs]),
        "seg": rep(list(range(len(segs)))),
        "lo": rep([s.lo for s in segs]),
        "causal": rep([int(s.causal) for s in segs]),
        "glob": rep([int(s.is_global) for s in segs]),
        "pos": (np.arange(total, dtype=np.int64) + rep([s.pos for s in segs]) - np.repeat(np.cumsum(lens) - lens, lens)
                ).astype(np.int32),
    }
    for v in ids.values():
        v.setflags(write=False)
    return ids


def mask_fn(q: dict, kv: dict):
    """Elementwise attention rule. `q`/`kv` map field names to broadcastable int arrays
    (numpy or jnp); returns a boolean array of the broadcast shape."""
    same = (q["seq"] == kv["seq"]) & (q["seq"] >= 0)
    earlier = kv["pos"] <= q["pos"]
    own = (q["seg"] == kv["seg"]) & ((q["causal"] == 0) | earlier)
    seen = earlier & (((kv["seg"] < q["seg"]) & (kv["seg"] >= q["lo"])) | (kv["glob"] != 0))
    return same & (own | seen)


# ---- constructors ------------------------------------------------------------------------


def causal(n: int, *, seq: int = 0) -> Layout:
    """Plain causal text of n tokens."""
    return Layout((Segment(n, seq=seq, causal=True),))


def full(n: int, *, seq: int = 0) -> Layout:
    """Bidirectional attention over n tokens."""
    return Layout((Segment(n, seq=seq, causal=False),))


def _build(parts: Sequence[tuple[int, str, bool, int | None]], seq: int) -> Layout:
    """parts: (length, role, causal, lookback). role in {"global", "local", "all"}:
    global = visible to all later tokens; "all" = sees every earlier token; "local" sees the
    previous `lookback` *local* parts (plus globals). Zero-length parts are dropped."""
    segs: list[Segment] = []
    local_idx: list[int] = []  # absolute indices of earlier local segments
    first = None
    for length, role, is_causal, lookback in parts:
        if length <= 0:
            continue
        i = len(segs)
        first = i if first is None else first
        if role in ("all", "global"):
            lo = first
        else:
            k = lookback or 0
            if k <= 0 or not local_idx:
                lo = i
            else:
                lo = local_idx[-k] if k <= len(local_idx) else local_idx[0]
        segs.append(Segment(length, seq=seq, lo=lo, causal=is_causal, is_global=(role == "global")))
        if role == "local":
            local_idx.append(i)
    return Layout(tuple(segs))


def segmented(
    prefix: int,
    segment_lens: Sequence[int],
    suffix: int = 0,
    *,
    segment_causal: bool = False,
    prev: int = 0,
    prefix_causal: bool = True,
    suffix_causal: bool = True,
    seq: int = 0,
) -> Layout:
    """A shared (global) prefix, video segments that attend within themselves and to the
    previous `prev` segments (bidirectional or causal inside), and a suffix that attends to
    everything before it."""
    parts = [(prefix, "global", prefix_causal, None)]
    parts += [(n, "local", segment_causal, prev) for n in segment_lens]
    parts.append((suffix, "all", suffix_causal, None))
    return _build(parts, seq)


def chunk_sparse(
    prefix: int,
    n_chunks: int,
    chunk_len: int,
    prev_k: int,
    suffix: int = 0,
    *,
    timestamp_len: int = 0,
    seq: int = 0,
    gather_timestamps: bool = False,
) -> Layout:
    """Video-XL-2 chunk-sparse prefill: visual chunk b attends causally to itself and the
    previous `prev_k` chunks; the prefix and the optional timestamp tokens before each chunk
    are global (visible to all later tokens) and see everything before them; the suffix
    (question) attends to everything. `gather_timestamps`: the same mask with the timestamps
    gathered into one run before the suffix (`gather_globals`)."""
    parts = [(prefix, "global", True, None)]
    for _ in range(n_chunks):
        parts.append((timestamp_len, "global", True, None))
        parts.append((chunk_len, "local", True, prev_k))
    parts.append((suffix, "all", True, None))
    lay = _build(parts, seq)
    if not (gather_timestamps and timestamp_len and n_chunks):
        return lay
    segs = lay.segments
    times = [i for i, sg in enumerate(segs) if sg.is_global and not (prefix > 0 and i == 0)]
    return gather_globals(lay, times, len(segs) - (suffix > 0))


def gather_globals(layout: Layout, moved: Sequence[int], before: int) -> Layout:
    """The same mask as `layout` (unpermuted) with the segments `moved` — global ones that see everything
    before them (lo = the first segment of their sequence) — taken out and put, in order, just before
    segment `before` (> every moved index; `len(segments)` = at the end), keeping their original
    positions: a permuted layout whose global keys and dense query rows are contiguous, so that the
    kernels skip the blocks between. Ranges [lo, i) of the other segments shrink to their unmoved part
    (a moved segment is global: it stays visible exactly where it was)."""
    segs = layout.segments
    moved = sorted(set(int(j) for j in moved))
    if layout.permuted:
        raise ValueError("gather_globals takes an unpermuted layout")
    if moved and not (0 <= moved[0] and moved[-1] < before <= len(segs)):
        raise ValueError(f"segments {moved} cannot move before segment {before} of {len(segs)}")
    first = []  # first segment of each segment's run of same-sequence segments
    for i, sg in enumerate(segs):
        first.append(first[-1] if i and segs[i - 1].seq == sg.seq else i)
    for j in moved:
        if not segs[j].is_global or segs[j].lo != first[j]:
            raise ValueError(f"segment {j} is not a global segment that sees everything before it")
    if any(first[j] != first[before - 1] for j in moved):
        raise ValueError(f"segments {moved} and segment {before - 1} are not in one sequence run")
    is_moved = set(moved)
    rest = [j for j in range(len(segs)) if j not in is_moved]
    new_order = [j for j in rest if j < before] + moved + [j for j in rest if j >= before]
    new_index = {old: new for new, old in enumerate(new_order)}
    next_rest = [len(segs)] * (len(segs) + 1)  # the first unmoved segment at or after j
    for j in range(len(segs) - 1, -1, -1):
        next_rest[j] = next_rest[j + 1] if j in is_moved else j
    out = []
    for i in new_order:
        sg = segs[i]
        if i in is_moved:  # everything earlier in its run: the run's first segment in the new order
            j = next_rest[first[i]]
            lo = new_index[j] if j < before else new_index[moved[0]]
        else:  # unmoved segments keep their order: the first unmoved one of [lo, i)
            j = next_rest[sg.lo]
            lo = new_index[j] if j < i else new_index[i]
        out.append(dataclasses.replace(sg, lo=lo, pos=int(layout.starts[i])))
    return Layout(tuple(out))


def qc_windows(
    prefix: int,
    window_lens: Sequence[int],
    question_len: int,
    *,
    window_causal: bool = True,
    question_causal: bool = True,
    prefix_causal: bool = True,
    seq: int = 0,
) -> Layout:
    """QC-Comp windows: a shared prefix, then W windows each seeing prefix + itself, each
    followed by its own question copy seeing prefix + its window + itself."""
    segs: list[Segment] = []
    if prefix > 0:
        segs.append(Segment(prefix, seq=seq, lo=0, causal=prefix_causal, is_global=True))
    for w in window_lens:
        if w > 0:
            segs.append(Segment(w, seq=seq, causal=window_causal))
            win = len(segs) - 1
        else:
            win = len(segs)
        if question_len > 0:
            segs.append(Segment(question_len, seq=seq, lo=win, causal=question_causal))
    return Layout(tuple(segs))


def packed(*layouts: Layout) -> Layout:
    """Independent sequences one after another; sequence ids are renumbered 0, 1, ...
    Padding segments (seq -1) stay padding."""
    segs: list[Segment] = []
    tokens = 0
    for n, lay in enumerate(layouts):
        off = len(segs)
        for s in lay.segments:
            segs.append(dataclasses.replace(s, lo=s.lo + off, seq=(-1 if s.seq < 0 else n), pos=s.pos + tokens))
        tokens += lay.length
    return Layout(tuple(segs))


def padding(n: int) -> Layout:
    """n padding tokens (attend to nothing, seen by nothing)."""
    return Layout((Segment(n, seq=-1, causal=False),))
