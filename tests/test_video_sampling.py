"""dynamic_fps1 sampling vs the rule written out again as a plain loop (independent of lvjax)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvjax.video.sampling import (
    clip_window,
    duplicate_indices,
    num_sampled_frames,
    plan_frames,
    sample_frame_indices,
    time_message,
)


def reference_indices(vlen, input_fps, target_fps, L, min_nf, max_nf):
    """The original get_frame_indices(sample='dynamic_fps1') path, one statement per step."""
    if L > vlen:
        return [i * vlen // L for i in range(L)]
    if min_nf > vlen:
        min_nf = (vlen // L) * L
    duration = float(vlen) / input_fps
    segs = int(target_fps * duration // L)
    nf = L if segs == 0 else L * segs
    if max_nf > 0:
        nf = min(nf, max_nf)
    if nf > vlen:
        nf = (vlen // L) * L
    nf = max(min_nf, nf)
    acc = min(nf, vlen)
    edges = np.linspace(start=0, stop=vlen, num=acc + 1).astype(int)
    out = []
    for k in range(acc):
        lo, hi = edges[k], edges[k + 1] - 1
        out.append((lo + hi) // 2)
    while len(out) < nf:
        out.append(out[-1])
    return out


def reference_load_video(vlen, fps, target_fps, L, min_nf, max_nf, window, duplicate):
    """The original load_video + read_frames_decord around get_frame_indices."""
    duration = vlen / float(fps)
    first = 0
    n = vlen
    if window is not None:
        s, e = window
        s = max(0, s)
        e = min(duration - 0.1, e)
        duration = e - s
        n = int(duration * fps)
        first = int(s * fps)
    idx = [i + first for i in reference_indices(n, fps, target_fps, L, min_nf, max_nf)]
    count = len(idx)
    if duplicate and count < min_nf:
        idx = [idx[int(i * count / min_nf)] for i in range(min_nf)]
    msg = f"\nThe video lasts for {duration:.2f} seconds, and {len(idx)} frames are uniformly sampled from it. "
    return idx, msg


fps_values = st.sampled_from([1.0, 3.0, 8.0, 23.976023976023978, 24.0, 25.0, 29.97002997002997, 30.0, 50.0, 60.0, 0.5, 7.3])


@settings(max_examples=400, deadline=None)
@given(vlen=st.integers(1, 20000), fps=fps_values, target=st.sampled_from([0.5, 1, 2, 4, 8]),
       L=st.sampled_from([1, 2, 4, 8, 16]), min_nf=st.integers(0, 300), max_nf=st.sampled_from([-1, 0, 8, 64, 512, 1024, 2000]))
def test_indices_match_plain_loop(vlen, fps, target, L, min_nf, max_nf):
    got = sample_frame_indices(vlen, fps, target_fps=target, local_num_frames=L, max_num_frames=max_nf, min_num_frames=min_nf)
    want = reference_indices(vlen, fps, target, L, min_nf, max_nf)
    assert got.dtype == np.int64
    assert got.tolist() == want
    assert num_sampled_frames(vlen, fps, target_fps=target, local_num_frames=L, max_num_frames=max_nf,
                              min_num_frames=min_nf) == len(want)
    assert got.min() >= 0 and got.max() < vlen
    assert np.all(np.diff(got) >= 0)


@settings(max_examples=300, deadline=None)
@given(vlen=st.integers(1, 5000), fps=fps_values, target=st.sampled_from([1, 8]), L=st.sampled_from([4, 8]),
       min_nf=st.sampled_from([0, 16, 64, 128]), max_nf=st.sampled_from([64, 512, 1024]),
       window=st.one_of(st.none(), st.tuples(st.floats(-2, 300), st.floats(0, 400))), duplicate=st.booleans())
def test_plan_matches_load_video(vlen, fps, target, L, min_nf, max_nf, window, duplicate):
    try:
        want_idx, want_msg = reference_load_video(vlen, fps, target, L, min_nf, max_nf, window, duplicate)
        ok = True
    except Exception:  # the original fails (empty window → empty linspace / negative lengths)
        ok = False
    if window is not None:
        s, e = window
        full = vlen / fps
        n = int((min(full - 0.1, e) - max(0, s)) * fps)
        if n < 1 or int(max(0, s) * fps) >= vlen:
            with pytest.raises(ValueError):
                plan_frames(vlen, fps, target_fps=target, local_num_frames=L, max_num_frames=max_nf,
                            min_num_frames=min_nf, start=s, end=e, duplicate_to_min=duplicate)
            return
    assert ok
    plan = plan_frames(vlen, fps, target_fps=target, local_num_frames=L, max_num_frames=max_nf, min_num_frames=min_nf,
                       start=None if window is None else window[0], end=None if window is None else window[1],
                       duplicate_to_min=duplicate)
    assert plan.indices.tolist() == want_idx
    assert plan.time_msg == want_msg
    assert plan.indices.max() < vlen


def test_known_cases():
    # the fixture video16: 16 frames at 4 fps, VideoChat-Flash defaults → all 16 frames, no duplication
    plan = plan_frames(16, 4.0, target_fps=1, local_num_frames=8, max_num_frames=512, min_num_frames=64)
    assert plan.indices.tolist() == list(range(16))
    assert plan.time_msg == "\nThe video lasts for 4.00 seconds, and 16 frames are uniformly sampled from it. "
    # qc128 / qcfull: 8 fps, min 128, max 1024
    p = plan_frames(128, 8.0, target_fps=8, max_num_frames=1024, min_num_frames=128, duplicate_to_min=True)
    assert p.time_msg == "\nThe video lasts for 16.00 seconds, and 128 frames are uniformly sampled from it. "
    p = plan_frames(1024, 8.0, target_fps=8, max_num_frames=1024, min_num_frames=128, duplicate_to_min=True)
    assert p.indices.tolist() == list(range(1024))
    assert p.time_msg == "\nThe video lasts for 128.00 seconds, and 1024 frames are uniformly sampled from it. "
    # XComp duplication: 16 frames, min 64 → each frame 4 times
    p = plan_frames(16, 4.0, min_num_frames=64, duplicate_to_min=True)
    assert p.indices.tolist() == [i // 4 for i in range(64)] and p.num_sampled == 16
    assert "and 64 frames" in p.time_msg
    # 1 h at 30 fps, 1 fps target, default cap 512
    idx = sample_frame_indices(108000, 30.0)
    assert len(idx) == 512 and idx[0] == 104 and idx[-1] == 107894  # (0 + 209) // 2, (107789 + 107999) // 2
    # fewer frames than L: L indices with repeats
    assert sample_frame_indices(3, 25.0).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_helpers():
    assert time_message(3.14159, 7) == "\nThe video lasts for 3.14 seconds, and 7 frames are uniformly sampled from it. "
    assert duplicate_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert clip_window(100, 10.0, None, None) == (0, 100, 10.0)
    first, n, dur = clip_window(100, 10.0, 2.0, 5.0)
    assert (first, n) == (20, 30) and dur == pytest.approx(3.0)
    with pytest.raises(ValueError):
        sample_frame_indices(0, 25.0)
    with pytest.raises(ValueError):
        sample_frame_indices(10, 0.0)
