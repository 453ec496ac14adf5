"""PyAV reader on real encoded files: sampled indices follow the formula, the seeking decoder
returns exactly the frames of a full sequential decode, and bad inputs raise VideoError."""

from __future__ import annotations

import dataclasses
import threading
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from videos import (
    decode_all,
    frame_image,
    frame_number,
    truncate,
    write_audio_only,
    write_video,
    write_zero_frames,
)

import lvjax.video.decode as dec
from lvjax.video import (
    VideoError,
    VideoFrames,
    decode_all_frames,
    from_array,
    load_frames,
    plan_frames,
    probe_video,
    read_image_folder,
    read_video,
    sample_frame_indices,
)

N = 150
VFR_MS = np.cumsum([0] + [40 if i % 3 else 110 for i in range(N - 1)])  # uneven gaps, ms


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    out = {
        "cfr.mp4": write_video(d / "cfr.mp4", N, fps=25, gop=12),
        "vfr.mp4": write_video(d / "vfr.mp4", N, pts=VFR_MS, time_base=Fraction(1, 1000), gop=12),
        "bframes.mp4": write_video(d / "bframes.mp4", N, fps=30, gop=16, bframes=2),
        "cfr.webm": write_video(d / "cfr.webm", N, fps=24, gop=12),
        "vfr.webm": write_video(d / "vfr.webm", N, pts=VFR_MS, time_base=Fraction(1, 1000), gop=12),
        "cfr.avi": write_video(d / "cfr.avi", N, fps=25, gop=12),
        # VP9 with hidden alt-ref frames (superframes), as libvpx encodes by default
        "altref.webm": write_video(d / "altref.webm", N, fps=24, gop=40,
                                   options={"lag-in-frames": "16", "auto-alt-ref": "1"}),
    }
    return out


@pytest.fixture(scope="module")
def reference(videos):
    return {k: np.stack(decode_all(p)) for k, p in videos.items()}


NAMES = ["cfr.mp4", "vfr.mp4", "bframes.mp4", "cfr.webm", "vfr.webm", "cfr.avi", "altref.webm"]
CASES = [
    dict(fps=1.0, local_num_frames=1, min_num_frames=0),            # sparse: a few frames, far apart
    dict(fps=2.0, local_num_frames=4, min_num_frames=0, max_num_frames=8),
    dict(fps=8.0, local_num_frames=4, min_num_frames=0),            # dense
    dict(fps=1.0, local_num_frames=8, min_num_frames=64),           # the defaults' min: N < 64 ... pads
    dict(fps=1.0, local_num_frames=8, min_num_frames=200, duplicate_to_min=True),
]


@pytest.mark.parametrize("name", NAMES)
def test_frames_match_formula_and_sequential_decode(videos, reference, name):
    full = reference[name]
    assert len(full) == N and [frame_number(f) for f in full] == list(range(N))
    for case in CASES:
        got = read_video(videos[name], **case)
        seq = read_video(videos[name], seek=False, **case)
        plan = plan_frames(N, got.fps, target_fps=case["fps"],
                           **{k: v for k, v in case.items() if k != "fps"})
        assert got.num_source_frames == N
        assert (got.method, seq.method) == ("seek", "sequential")
        assert got.indices.tolist() == plan.indices.tolist()
        assert got.time_msg == plan.time_msg
        assert got.duration == pytest.approx(N / got.fps)
        assert got.frames.dtype == np.uint8 and got.frames.shape == (len(plan.indices), 48, 64, 3)
        np.testing.assert_array_equal(got.frames, full[got.indices])  # exact: same bitstream
        np.testing.assert_array_equal(seq.frames, got.frames)
        assert [frame_number(f) for f in got.frames] == got.indices.tolist()


def test_fps_and_timestamps(videos):
    assert read_video(videos["cfr.mp4"], min_num_frames=0).fps == 25.0
    assert read_video(videos["cfr.webm"], min_num_frames=0).fps == 24.0
    # MP4 VFR: the average rate = frames / duration; frame i sits at its written pts
    v = read_video(videos["vfr.mp4"], fps=8, local_num_frames=1, min_num_frames=0)
    total = (VFR_MS[-1] + 40) / 1000
    assert v.fps == pytest.approx(N / total, rel=1e-6)
    assert v.duration == pytest.approx(total)
    np.testing.assert_allclose(v.timestamps, VFR_MS[v.indices] / 1000, atol=1e-9)
    w = read_video(videos["vfr.webm"], fps=8, local_num_frames=1, min_num_frames=0)
    np.testing.assert_allclose(w.timestamps, VFR_MS[w.indices] / 1000, atol=1e-9)
    import av

    with av.open(str(videos["bframes.mp4"])) as c:  # the B-frame file really reorders frames
        assert any(p.pts != p.dts for p in c.demux(video=0) if p.size)
    info = probe_video(videos["vfr.mp4"])
    assert info["num_frames"] == N and info["seekable"] and (info["width"], info["height"]) == (64, 48)


def test_window(videos, reference):
    v = read_video(videos["cfr.mp4"], start=1.0, end=4.0, fps=2, local_num_frames=2, min_num_frames=0)
    plan = plan_frames(N, 25.0, target_fps=2, local_num_frames=2, min_num_frames=0, start=1.0, end=4.0)
    assert v.indices.tolist() == plan.indices.tolist() and v.indices.min() >= 25 and v.indices.max() < 100
    assert v.time_msg.startswith("\nThe video lasts for 3.00 seconds")
    np.testing.assert_array_equal(v.frames, reference["cfr.mp4"][v.indices])
    with pytest.raises(VideoError, match="cfr.mp4"):
        read_video(videos["cfr.mp4"], start=100.0, end=200.0)


class _Counting:
    """Container proxy that counts decoded frames."""

    def __init__(self, container, counter):
        self._c, self._n = container, counter

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def __getattr__(self, name):
        return getattr(self._c, name)

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            self._n[0] += 1
            yield frame


def test_sparse_reads_decode_few_frames(videos, reference, monkeypatch):
    real_open, counter = dec._open, [0]
    monkeypatch.setattr(dec, "_open", lambda p: _Counting(real_open(p), counter))
    case = dict(fps=1.0, local_num_frames=1, min_num_frames=0)  # 6 s → 6 frames of 150
    calls = []
    v = read_video(videos["cfr.mp4"], progress=lambda done, total: calls.append((done, total)), **case)
    assert len(v) == 6 and calls == [(k, 6) for k in range(1, 7)]
    seeking = counter[0]
    counter[0] = 0
    s = read_video(videos["cfr.mp4"], seek=False, **case)
    sequential = counter[0]
    np.testing.assert_array_equal(v.frames, s.frames)
    assert seeking <= 6 * 12 and seeking < sequential / 2, (seeking, sequential)


def test_index_sources(videos, reference, monkeypatch):
    # no reordering and a complete sample table: the container's index, no packet scan
    for name in ("cfr.mp4", "vfr.mp4", "cfr.avi"):
        assert probe_video(videos[name], container_index=True)["index"] == "container"
    for name in ("bframes.mp4", "cfr.webm", "altref.webm"):
        assert probe_video(videos[name], container_index=True)["index"] == "demux"
    a, b = probe_video(videos["vfr.mp4"], container_index=True), probe_video(videos["vfr.mp4"])
    assert {k: v for k, v in a.items() if k != "index"} == {k: v for k, v in b.items() if k != "index"}
    # a container index that lies (pts shifted) is caught on the first decoded frame
    real = dec._container_index

    def shifted(path, stream):
        idx = real(path, stream)
        return dataclasses.replace(idx, pts=idx.pts + 1) if idx is not None else None

    monkeypatch.setattr(dec, "_container_index", shifted)
    scans = []
    real_scan = dec._scan
    monkeypatch.setattr(dec, "_scan", lambda *a, **k: scans.append(k) or real_scan(*a, **k))
    v = read_video(videos["cfr.mp4"], fps=2, local_num_frames=2, min_num_frames=0)
    assert v.method == "seek" and len(scans) == 2
    np.testing.assert_array_equal(v.frames, reference["cfr.mp4"][v.indices])
    # a table off by whole frames (decode times of a reordering stream taken for pts): every
    # decoded pts is in the table, but the frame after a seek is not the keyframe it sought

    def off_by_two(path, stream):
        idx = real(path, stream)
        if idx is None:
            return None
        step = int(idx.pts[1] - idx.pts[0])
        return dataclasses.replace(idx, pts=idx.pts - 2 * step)

    monkeypatch.setattr(dec, "_container_index", off_by_two)
    scans.clear()
    v = read_video(videos["cfr.mp4"], fps=2, local_num_frames=2, min_num_frames=0)
    assert len(scans) == 2
    np.testing.assert_array_equal(v.frames, reference["cfr.mp4"][v.indices])


def test_run_grouping():
    keys = np.arange(0, 1000, 50)
    runs = dec._runs([10, 20, 30, 400, 405, 990], keys, seek_cost=8)
    assert runs == [(0, [10, 20, 30]), (400, [400, 405]), (950, [990])]
    assert dec._runs(list(range(0, 300, 3)), keys, 8) == [(0, list(range(0, 300, 3)))]  # dense: one pass
    assert dec._runs([5, 60], np.zeros(0, np.int64), 8) == [(0, [5, 60])]


@pytest.mark.parametrize("threads", [1, 2, 0, "auto"])
def test_threads_give_same_frames(videos, reference, threads):
    v = read_video(videos["bframes.mp4"], fps=4, local_num_frames=4, min_num_frames=0, threads=threads)
    np.testing.assert_array_equal(v.frames, reference["bframes.mp4"][v.indices])


def test_auto_threads_is_one_in_workers():
    assert not dec._in_worker()
    seen = []
    t = threading.Thread(target=lambda: seen.append(dec._in_worker()))
    t.start()
    t.join()
    assert seen == [True]


def test_stream_without_timestamps_falls_back(tmp_path, videos, reference):
    import av

    raw = tmp_path / "raw.h264"  # an elementary stream: packets carry no pts, no seeking
    with av.open(str(videos["cfr.mp4"])) as src, av.open(str(raw), "w", format="h264") as out:
        s = src.streams.video[0]
        o = out.add_stream_from_template(s)
        for packet in src.demux(s):
            if packet.size:
                packet.stream = o
                out.mux(packet)
    info = probe_video(raw)
    assert info["num_frames"] == N and not info["seekable"]
    v = read_video(raw, fps=2, local_num_frames=2, min_num_frames=0)
    assert v.method == "sequential"
    np.testing.assert_array_equal(v.frames, reference["cfr.mp4"][v.indices])


def test_fps_fallbacks(videos):
    s = SimpleNamespace(average_rate=None, guessed_rate=None, duration=None)
    pts = np.arange(0, 100 * 512, 512)
    fps, how = dec._resolve_fps("x.mp4", s, 100, pts, Fraction(1, 12800))
    assert how == "frames/pts span" and fps == pytest.approx(99 / (99 * 512 / 12800))
    s.duration = 51200
    assert dec._resolve_fps("x.mp4", s, 100, pts, Fraction(1, 12800)) == (25.0, "frames/duration")
    with pytest.raises(VideoError, match="x.mp4.*source_fps"):
        dec._resolve_fps("x.mp4", SimpleNamespace(average_rate=None, guessed_rate=None, duration=None), 1, None, None)
    v = read_video(videos["cfr.mp4"], source_fps=50.0, min_num_frames=0)  # override
    assert v.fps == 50.0 and v.duration == pytest.approx(3.0)


def _err(path, **kw):
    with pytest.raises(VideoError) as e:
        read_video(path, **kw)
    assert str(path) in str(e.value)
    return str(e.value)


def test_bad_inputs(tmp_path, videos):
    assert "no such file" in _err(tmp_path / "missing.mp4")
    assert "not a readable" in _err(truncate(videos["cfr.mp4"], tmp_path / "trunc.mp4", 0.6))
    assert "truncated" in _err(truncate(videos["cfr.webm"], tmp_path / "trunc.webm", 0.5))
    # MP4 with its index first: the container index lists frames the file no longer holds
    fast = truncate(write_video(tmp_path / "fast.mp4", N, fps=25, gop=12, faststart=True), tmp_path / "fast_cut.mp4", 0.6)
    head = fast.read_bytes()
    assert head.find(b"moov") < head.find(b"mdat")
    assert "truncated" in _err(fast)
    assert "truncated" in _err(fast, seek=False)
    early = read_video(fast, start=0, end=2, fps=4, local_num_frames=2, min_num_frames=0)  # frames still there
    assert [frame_number(f) for f in early.frames] == early.indices.tolist()
    assert "truncated" in _err(truncate(videos["cfr.avi"], tmp_path / "trunc.avi", 0.5))
    assert "no frames" in _err(write_zero_frames(tmp_path / "zero.avi"))
    assert "no video stream" in _err(write_audio_only(tmp_path / "audio.m4a"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.RandomState(0).bytes(5000))
    _err(junk)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _err(empty)
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no images here")
    assert "no images" in _err(tmp_path / "nothing")
    # lenient mode reads what a truncated file holds
    v = read_video(tmp_path / "trunc.webm", strict=False, fps=4, local_num_frames=1, min_num_frames=0)
    assert 0 < v.num_source_frames < N
    assert [frame_number(f) for f in v.frames] == v.indices.tolist()
    with pytest.raises(VideoError, match="probe_missing"):
        probe_video(tmp_path / "probe_missing.webm")


def test_image_folder(tmp_path):
    from PIL import Image

    d = tmp_path / "frames"
    d.mkdir()
    for i in range(20):  # unpadded numbers: natural order must put frame_2 before frame_10
        Image.fromarray(frame_image(i)).save(d / f"frame_{i}.png")
    (d / "readme.txt").write_text("ignored")
    v = read_image_folder(d, image_fps=2.0, fps=1.0, local_num_frames=2, min_num_frames=0)
    assert v.num_source_frames == 20 and v.fps == 2.0 and v.duration == 10.0
    assert v.indices.tolist() == sample_frame_indices(20, 2.0, target_fps=1.0, local_num_frames=2,
                                                      min_num_frames=0).tolist()
    assert [frame_number(f) for f in v.frames] == v.indices.tolist()
    w = load_frames(str(d), image_fps=2.0, local_num_frames=2, min_num_frames=0)
    np.testing.assert_array_equal(w.frames, v.frames)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(d / "frame_99.png")
    with pytest.raises(VideoError, match="differ in size"):
        read_image_folder(d, local_num_frames=1, min_num_frames=21)
    (d / "frame_100.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match="frame_100.jpg"):
        read_image_folder(d, local_num_frames=1, min_num_frames=22)


def test_arrays_and_dispatch(videos):
    arr = np.stack([frame_image(i) for i in range(40)])
    v = from_array(arr, 4.0, local_num_frames=4, min_num_frames=0)
    assert isinstance(v, VideoFrames) and v.num_source_frames == 40 and v.duration == 10.0
    assert [frame_number(f) for f in v.frames] == v.indices.tolist()
    np.testing.assert_array_equal(load_frames((arr, 4.0), local_num_frames=4, min_num_frames=0).frames, v.frames)
    np.testing.assert_array_equal(load_frames(arr, video_fps=4.0, local_num_frames=4, min_num_frames=0).frames, v.frames)
    assert load_frames(videos["cfr.mp4"], min_num_frames=0).num_source_frames == N
    with pytest.raises(VideoError, match="video_fps"):
        load_frames(arr)
    with pytest.raises(VideoError, match="uint8"):
        from_array(arr.astype(np.float32), 4.0)
    # the 16-frame fixture video at 4 fps: all frames, "4.00 seconds, 16 frames"
    v16 = load_frames((np.zeros((16, 8, 8, 3), np.uint8), 4.0))
    assert v16.indices.tolist() == list(range(16))
    assert v16.time_msg == "\nThe video lasts for 4.00 seconds, and 16 frames are uniformly sampled from it. "


def test_decode_all_frames_and_bad_threads(videos, reference):
    np.testing.assert_array_equal(decode_all_frames(videos["vfr.webm"]), reference["vfr.webm"])
    with pytest.raises(ValueError, match="threads"):
        read_video(videos["cfr.mp4"], threads=-1)


def test_resize_while_decoding(videos, tmp_path):
    from lvjax.video import preprocess, resize_frames

    case = dict(fps=4, local_num_frames=4, min_num_frames=0)
    full = read_video(videos["cfr.webm"], **case)
    small = read_video(videos["cfr.webm"], resize_to=(30, 40), **case)
    np.testing.assert_array_equal(small.frames, resize_frames(full.frames, (30, 40)))
    np.testing.assert_array_equal(preprocess(read_video(videos["cfr.mp4"], resize_to=32, **case).frames, 32),
                                  preprocess(read_video(videos["cfr.mp4"], **case).frames, 32))
    arr = np.stack([frame_image(i) for i in range(16)])
    a = load_frames((arr, 4.0), resize_to=24, local_num_frames=4, min_num_frames=0)
    assert a.frames.shape == (len(a), 24, 24, 3)


@pytest.mark.parametrize("trials", [pytest.param(12, id="quick"), pytest.param(240, id="many", marks=pytest.mark.heavy)])
def test_damaged_files_give_frames_or_video_error(videos, tmp_path, trials):
    """Cut, flipped and overwritten bytes: a result or a VideoError naming the file, nothing else."""
    rng = np.random.RandomState(0)
    names = ["cfr.mp4", "cfr.webm", "cfr.avi"]
    for trial in range(trials):
        name = names[trial % 3]
        data = bytearray(videos[name].read_bytes())
        kind = trial % 4
        if kind == 0:
            data = data[:rng.randint(1, len(data))]
        elif kind in (1, 2):
            for _ in range(rng.randint(1, 20)):
                data[rng.randint(0, len(data))] = rng.randint(0, 256)
        else:
            i, n = rng.randint(0, len(data)), rng.randint(1, 2000)
            data[i:i + n] = rng.bytes(len(data[i:i + n]))
        path = tmp_path / f"damaged{trial}.{name.split('.')[1]}"
        path.write_bytes(bytes(data))
        for strict in (True, False):
            try:
                v = read_video(path, strict=strict, fps=4, local_num_frames=2, min_num_frames=0)
                assert v.frames.dtype == np.uint8 and len(v) > 0
            except VideoError as e:
                assert str(path) in str(e)


def test_bench_tool_runs(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_video", Path(__file__).parents[1] / "tools" / "bench_video.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--workdir", str(tmp_path), "--minutes", "0.1", "--gop", "30", "--max-frames", "16", "--min-frames", "8"])
    out = capsys.readouterr().out
    assert "seek == sequential frames: True" in out and "ratio" in out
