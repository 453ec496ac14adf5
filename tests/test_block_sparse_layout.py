"""Layouts and block metadata: semantics of each layout type, metadata exactly equal to a
brute-force block classification of the dense mask, visit lists and their transpose."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels_pallas.block_sparse import layout as L
from kernels_pallas.block_sparse.block_info import (
    EMPTY,
    FULL,
    PARTIAL,
    STEP_FIRST,
    STEP_LAST,
    STEP_PARTIAL,
    STEP_SKIP,
    block_info,
    brute_force_kinds,
    unpack_step,
)
from lvjax.families.video_xl2.spans import synthetic_spans
from lvjax.families.video_xl2.sparse import chunk_layout, chunk_mask, chunks
from lvjax.models.llm import causal_layout

LAYOUTS = {
    "causal": L.causal(37),
    "full": L.full(21),
    "segmented_bidir": L.segmented(5, [13, 9, 20, 6], 7),
    "segmented_causal_prev2": L.segmented(5, [13, 9, 20, 6], 7, segment_causal=True, prev=2),
    "segmented_no_prefix_suffix": L.segmented(0, [10, 10, 3], 0, prev=1),
    "chunk_sparse": L.chunk_sparse(6, 7, 9, 3, 8),
    "chunk_sparse_timestamps": L.chunk_sparse(6, 5, 9, 2, 8, timestamp_len=3),
    "chunk_sparse_gathered": L.chunk_sparse(6, 5, 9, 2, 8, timestamp_len=3, gather_timestamps=True),
    "chunk_sparse_gathered_bare": L.chunk_sparse(0, 4, 7, 1, 0, timestamp_len=2, gather_timestamps=True),
    "qc_windows_causal": L.qc_windows(6, [10, 7, 12], 5),
    "qc_windows_bidir_question": L.qc_windows(6, [10, 7, 12], 5, question_causal=False, window_causal=False),
    "packed_padded": L.packed(L.causal(20), L.padding(5), L.segmented(3, [8, 8], 4), L.qc_windows(2, [5, 5], 3)).padded(70),
    "padding_only": L.padding(19),
    "answer_prefix_padding_question": causal_layout(45, (20, 27)),
}


def _brute(mask_fn_layout: L.Layout, i: int, j: int) -> bool:
    """Direct per-pair rule from the segment list (independent of token ids); i, j layout indices."""
    st_ = mask_fn_layout.starts
    si = int(np.searchsorted(st_, i, side="right") - 1)
    sj = int(np.searchsorted(st_, j, side="right") - 1)
    a, b = mask_fn_layout.segments[si], mask_fn_layout.segments[sj]
    pi, pj = a.pos + i - st_[si], b.pos + j - st_[sj]  # original positions
    if a.seq < 0 or a.seq != b.seq:
        return False
    if si == sj:
        return (not a.causal) or pj <= pi
    return pj <= pi and (a.lo <= sj < si or b.is_global)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_dense_mask_matches_pair_rule(name):
    lay = LAYOUTS[name]
    m = lay.mask_rows(0, lay.length)
    n = lay.length
    expect = np.array([[_brute(lay, i, j) for j in range(n)] for i in range(n)], bool)
    np.testing.assert_array_equal(m, expect)
    np.testing.assert_array_equal(lay.dense_mask(), m[lay.inverse][:, lay.inverse] if lay.permuted else m)


def test_layout_semantics():
    # QC-Comp: window 1 sees the prefix and itself, not window 0; its question sees prefix + window 1 + itself.
    lay = L.qc_windows(2, [3, 3], 2, question_causal=False, window_causal=False)
    m = lay.dense_mask()
    # tokens: prefix 0-1, w0 2-4, q0 5-6, w1 7-9, q1 10-11
    assert m[7, :2].all() and not m[7, 2:7].any() and m[7, 7:10].all()
    assert m[10, :2].all() and not m[10, 2:7].any() and m[10, 7:12].all() and not m[9, 10:].any()
    # Video-XL-2 chunk sparse: chunk 4 sees chunks 1..3 (prev_k=3) causally, not chunk 0.
    lay = L.chunk_sparse(2, 5, 4, 3, 3)
    m = lay.dense_mask()
    c = lambda b: slice(2 + 4 * b, 6 + 4 * b)  # noqa: E731
    row = 2 + 4 * 4 + 1
    assert m[row, :2].all() and not m[row, c(0)].any() and m[row, 6:row + 1].all() and not m[row, row + 1:].any()
    assert m[-1].all()  # the question sees everything (causal: the last token sees all)
    # Packed sequences never see each other; padding rows are empty.
    lay = L.packed(L.causal(4), L.padding(2), L.causal(3))
    m = lay.dense_mask()
    assert not m[6:, :6].any() and not m[4:6].any() and not m[:, 4:6].any()


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize("bq,bk", [(8, 8), (16, 8), (4, 16), (32, 32)])
def test_block_info_matches_brute_force(name, bq, bk):
    lay = LAYOUTS[name]
    info = block_info(lay, bq, bk)
    total = max(info.q_len, info.kv_len)
    mask = lay.mask_rows(0, info.q_len, total)[:, : info.kv_len]
    expect = brute_force_kinds(mask, bq, bk)
    np.testing.assert_array_equal(info.kind, expect)
    _check_visit_lists(info)
    assert info.num_visited == int((expect != EMPTY).sum())


def _check_steps(steps, kind):
    """Packed grid steps: one per non-empty block in row-major order, plus one SKIP step per
    empty row; FIRST/LAST mark each row's first and last step."""
    r, c, f = (np.asarray(x) for x in unpack_step(steps.astype(np.int64)))
    live = (f & STEP_SKIP) == 0
    assert live.sum() == (kind != EMPTY).sum()
    rows, cols = np.nonzero(kind != EMPTY)
    np.testing.assert_array_equal(r[live], rows)
    np.testing.assert_array_equal(c[live], cols)
    np.testing.assert_array_equal((f[live] & STEP_PARTIAL) != 0, kind[rows, cols] == PARTIAL)
    empty_rows = np.nonzero((kind != EMPTY).sum(1) == 0)[0]
    np.testing.assert_array_equal(r[~live], empty_rows)
    assert len(steps) == live.sum() + len(empty_rows)
    for i in range(kind.shape[0]):
        fi = f[r == i]
        assert (fi[0] & STEP_FIRST) and (fi[-1] & STEP_LAST)
        assert not (fi[1:] & STEP_FIRST).any() and not (fi[:-1] & STEP_LAST).any()
    assert (np.diff(r) >= 0).all()  # a row's steps are consecutive


def _check_visit_lists(info):
    kind = info.kind
    _check_steps(info.steps, kind)
    _check_steps(info.steps_t, np.ascontiguousarray(kind.T))
    for i in range(kind.shape[0]):
        nz = np.nonzero(kind[i])[0]
        c = info.counts[i]
        assert c == len(nz)
        np.testing.assert_array_equal(info.kv_index[i, :c], nz)
        np.testing.assert_array_equal(info.kv_partial[i, :c], kind[i, nz] == PARTIAL)
        if c:
            assert (info.kv_index[i, c:] == nz[-1]).all() and not info.kv_partial[i, c:].any()
    for j in range(kind.shape[1]):
        nz = np.nonzero(kind[:, j])[0]
        c = info.q_counts[j]
        assert c == len(nz)
        np.testing.assert_array_equal(info.q_index[j, :c], nz)
        np.testing.assert_array_equal(info.q_partial[j, :c], kind[nz, j] == PARTIAL)


@st.composite
def layouts(draw):
    kind = draw(st.sampled_from(["segmented", "chunk", "qc", "packed"]))
    small = st.integers(0, 12)
    if kind == "segmented":
        return L.segmented(draw(small), draw(st.lists(st.integers(1, 15), min_size=1, max_size=5)), draw(small),
                           segment_causal=draw(st.booleans()), prev=draw(st.integers(0, 3)),
                           prefix_causal=draw(st.booleans()), suffix_causal=draw(st.booleans()))
    if kind == "chunk":
        return L.chunk_sparse(draw(small), draw(st.integers(1, 5)), draw(st.integers(1, 11)), draw(st.integers(0, 3)),
                              draw(small), timestamp_len=draw(st.integers(0, 3)), gather_timestamps=draw(st.booleans()))
    if kind == "qc":
        return L.qc_windows(draw(small), draw(st.lists(st.integers(1, 12), min_size=1, max_size=4)),
                            draw(st.integers(0, 6)), window_causal=draw(st.booleans()),
                            question_causal=draw(st.booleans()))
    parts = [L.causal(draw(st.integers(1, 15))), L.padding(draw(st.integers(1, 5))),
             L.segmented(draw(small), [draw(st.integers(1, 9))] * 2, draw(small), prev=1)]
    return L.packed(*parts)


@settings(max_examples=60, deadline=None)
@given(layouts(), st.sampled_from([4, 8, 16]), st.sampled_from([4, 8, 16]), st.integers(0, 9))
def test_block_info_random_layouts(lay, bq, bk, extra_pad):
    if lay.length == 0:
        return
    lay = lay.padded(lay.length + extra_pad)
    info = block_info(lay, bq, bk)
    mask = lay.mask_rows(0, info.q_len, max(info.q_len, info.kv_len))[:, : info.kv_len]
    np.testing.assert_array_equal(info.kind, brute_force_kinds(mask, bq, bk))
    _check_visit_lists(info)


def test_block_info_is_cached_and_scales():
    lay = L.chunk_sparse(64, 512, 512, 3, 256, timestamp_len=8)  # ~270k tokens: no token×token mask
    a = block_info(lay, 512, 512)
    assert block_info(L.chunk_sparse(64, 512, 512, 3, 256, timestamp_len=8), 512, 512) is a
    nq, nk = a.kind.shape
    assert a.num_visited < 0.55 * nq * nk  # the prefix column and the question rows are visited in full
    assert a.counts.max() <= nk and (a.kind[:, 0] != EMPTY).all()
    assert (a.kind == FULL).sum() > 0


@pytest.mark.parametrize("name", ["packed_padded", "chunk_sparse_timestamps", "qc_windows_causal"])
def test_device_ids_match_host_ids(name):
    lay = LAYOUTS[name]
    for total in (lay.length, lay.length + 13):
        q, kv = lay.device_ids(total)
        np.testing.assert_array_equal(np.asarray(q), lay.q_ids(total))
        np.testing.assert_array_equal(np.asarray(kv), lay.kv_ids(total))


@st.composite
def raw_layouts(draw):
    """Any valid segment list: sequences interrupted by padding (the answer path's
    `[prefix + visual][padding][question]`), globals, causal or not, any visible range `lo`
    inside the run of same-sequence segments just before."""
    segs = []
    for i in range(draw(st.integers(1, 7))):
        seq = draw(st.sampled_from([-1, 0, 0, 1]))
        first = i
        while first > 0 and segs[first - 1].seq == seq:
            first -= 1
        segs.append(L.Segment(draw(st.integers(0, 13)), seq=seq, lo=draw(st.integers(first, i)),
                              causal=draw(st.booleans()), is_global=draw(st.booleans())))
    return L.Layout(tuple(segs))


@st.composite
def gathered_pairs(draw):
    """(layout, `gather_globals` of it) for a random layout: some global segments that see everything
    before them, moved in order to just before a later segment of their sequence run."""
    lay = draw(st.one_of(layouts(), raw_layouts()))
    segs = lay.segments
    runs = [[0]]
    for i in range(1, len(segs)):
        if segs[i].seq != segs[i - 1].seq:
            runs.append([])
        runs[-1].append(i)
    run = draw(st.sampled_from(runs))
    movable = [j for j in run if segs[j].is_global and segs[j].lo == run[0]]
    moved = draw(st.lists(st.sampled_from(movable), unique=True)) if movable and not lay.permuted else []
    if not moved:
        return lay, lay
    return lay, L.gather_globals(lay, moved, draw(st.integers(max(moved) + 1, run[-1] + 1)))


def gathered_layouts():
    return gathered_pairs().map(lambda pair: pair[1])


@settings(max_examples=150, deadline=None)
@given(gathered_pairs())
def test_gathered_layouts_keep_the_mask(pair):
    """A gathered layout allows exactly what the layout it came from allows, by original position; its
    `order` / `inverse` permute between the two orders; its layout-order mask is the pair rule."""
    lay, moved = pair
    n = lay.length
    np.testing.assert_array_equal(moved.dense_mask(), lay.dense_mask())
    np.testing.assert_array_equal(np.sort(moved.order), np.arange(n))
    np.testing.assert_array_equal(moved.order[moved.inverse], np.arange(n))
    m = moved.mask_rows(0, n)
    np.testing.assert_array_equal(m, lay.dense_mask()[moved.order][:, moved.order])
    expect = np.array([[_brute(moved, i, j) for j in range(n)] for i in range(n)], bool).reshape(n, n)
    np.testing.assert_array_equal(m, expect)


def test_gathered_chunk_sparse_visits_fewer_blocks():
    """Video-XL-2's mask at 512 frames: time tokens in place put a global key into nearly every key block;
    gathered, the visited blocks fall to the mask's own sparsity."""
    spans = synthetic_spans(512)
    inplace, gathered = chunk_layout(spans, 4, 3, gather=False), chunk_layout(spans, 4, 3)
    np.testing.assert_array_equal(gathered.dense_mask(), inplace.dense_mask())
    for block in (128, 512):
        a, b = block_info(inplace, block, block), block_info(gathered, block, block)
        assert b.num_visited < 0.6 * a.num_visited, (block, a.num_visited, b.num_visited)


@st.composite
def constructor_layouts(draw):
    """Every constructor of layout.py (and `causal_layout` of the LLM) with random sizes."""
    n = st.integers(1, 40)
    kind = draw(st.sampled_from(["causal", "full", "padding", "answer", "constructed", "gathered", "packed"]))
    if kind == "causal":
        return L.causal(draw(n))
    if kind == "full":
        return L.full(draw(n))
    if kind == "padding":
        return L.padding(draw(n))
    if kind == "answer":
        length = draw(st.integers(3, 60))
        start = draw(st.integers(1, length - 2))
        return causal_layout(length, (start, draw(st.integers(start + 1, length - 1))))
    if kind == "constructed":
        return draw(layouts())
    if kind == "gathered":
        return draw(gathered_layouts())
    return L.packed(*draw(st.lists(st.one_of(layouts(), raw_layouts(), st.just(L.padding(3))), min_size=1,
                                   max_size=3)))


@settings(max_examples=150, deadline=None)
@given(st.one_of(constructor_layouts(), raw_layouts()), st.sampled_from([4, 8, 16]), st.sampled_from([4, 8, 16]),
       st.integers(0, 9), st.sampled_from([0.0, 0.0, 0.3, 0.8]))
def test_block_info_every_constructor(lay, bq, bk, extra_pad, q_frac):
    """Also with the queries only the last positions (q_start > 0: a chunk attending to a cache)."""
    if lay.length == 0:
        return
    lay = lay.padded(lay.length + extra_pad)
    q_start = int(q_frac * lay.length)
    info = block_info(lay, bq, bk, q_start=q_start)
    mask = lay.mask_rows(q_start, q_start + info.q_len, max(q_start + info.q_len, info.kv_len))[:, : info.kv_len]
    np.testing.assert_array_equal(info.kind, brute_force_kinds(mask, bq, bk))
    _check_visit_lists(info)


def _tile_counts(lay: L.Layout, total: int, tile: int) -> np.ndarray:
    """(total/tile, total/tile) allowed-pair counts per tile of the dense mask, built a slab of
    `tile` query rows at a time (the full mask would not fit at 20k tokens)."""
    ids = lay.token_ids(total)
    kv = {f: ids[f][None, :] for f in L.KV_FIELDS}
    out = np.zeros((total // tile, total // tile), np.int64)
    for r in range(total // tile):
        q = {f: ids[f][r * tile:(r + 1) * tile, None] for f in L.Q_FIELDS}
        out[r] = np.asarray(L.mask_fn(q, kv)).reshape(tile, total // tile, tile).sum(axis=(0, 2))
    return out


def _kinds_from_tiles(counts, tile, bq, bk, nq, nk):
    c = counts.reshape(counts.shape[0] // (bq // tile), bq // tile, counts.shape[1] // (bk // tile), bk // tile)
    c = c.sum(axis=(1, 3))[:nq, :nk]
    return np.where(c == 0, EMPTY, np.where(c == bq * bk, FULL, PARTIAL)).astype(np.int8)


MODEL_LAYOUTS = {  # the layouts the models build, at realistic lengths
    "answer_700": causal_layout(700, (600, 650)),
    "answer_5000": causal_layout(5000, (3000, 4000)),
    "answer_5000_late_pad": causal_layout(5000, (4700, 4730)),
    "answer_20000": causal_layout(20000, (19000, 19500)),
    "causal_20000": causal_layout(20000, ()),
    "chunk_sparse_videoxl2": L.chunk_sparse(30, 64, 300, 3, 60, timestamp_len=6),
    "chunk_sparse_videoxl2_gathered": L.chunk_sparse(30, 64, 300, 3, 60, timestamp_len=6, gather_timestamps=True),
    "videoxl2_chunk_layout_512_frames": chunk_layout(synthetic_spans(512), 4, 3),
    "segment_local_xcomp": L.segmented(100, [512] * 38, 60),
    "segment_local_prev1_causal": L.segmented(100, [700] * 12, 60, segment_causal=True, prev=1),
    "qc_windows": L.qc_windows(100, [1024] * 8, 40),
}


@pytest.mark.parametrize("name", sorted(MODEL_LAYOUTS))
def test_block_info_model_layouts_at_length(name):
    lay = MODEL_LAYOUTS[name]
    total = -(-lay.length // 512) * 512
    counts = _tile_counts(lay, total, 128)
    for bq in (128, 256, 512):
        for bk in (128, 256, 512):
            info = block_info(lay, bq, bk)
            nq, nk = info.kind.shape
            np.testing.assert_array_equal(info.kind, _kinds_from_tiles(counts, 128, bq, bk, nq, nk),
                                          err_msg=f"blocks {bq}x{bk}")


@pytest.mark.parametrize("frames,block,prev", [(16, 1, 1), (64, 4, 3), (68, 4, 3), (80, 1, 2), (128, 2, 2), (128, 4, 3)])
def test_videoxl2_chunk_layout_is_the_token_rule(frames, block, prev):
    """`chunk_layout` (gathered, or causal when the rule hides nothing) against the per-token rule."""
    spans = synthetic_spans(frames, prefix=5, time_tokens=3, visual=8, suffix=6)
    lay = chunk_layout(spans, block, prev)
    np.testing.assert_array_equal(lay.dense_mask(), chunk_mask(spans, block, prev))
    assert lay.permuted == (len(chunks(spans, block, prev)) > prev + 1)
