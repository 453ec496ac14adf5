"""Decode the sampled frames of a video file (PyAV), an image folder or an in-memory array.

Frame numbering. Frame ``i`` of a file is the ``i``-th frame a plain sequential decode of its
first video stream outputs (presentation order). To find frames without decoding, a table of
presentation timestamps (pts) is built and sorted: frame ``i`` has the ``i``-th smallest pts.
This holds for constant and variable frame rate alike; it assumes one frame per packet (true
of the usual codecs) and is checked on every decoded frame. The table comes from
  1. the container's own index (MP4 sample table, AVI idx1 — no packet is read) when it lists
     every frame and the codec does not reorder frames (no B-frames: decode time = pts);
  2. else one demux pass over the video packets (reads the file, decodes nothing);
a decoded pts missing from table 1 retries with table 2, and from table 2 falls back to the
sequential path. ``num_source_frames`` is the table's length (non-empty video packets).

Seeking. Needed frames are grouped into runs: a run starts at the keyframe at or before its
first frame (``container.seek(pts, backward=True)``) and decodes forward, converting only the
needed frames to RGB; the next needed frame joins the run when decoding on to it costs no
more than seeking (``seek_cost`` frames) plus decoding from its own keyframe. Dense requests
therefore become one forward pass. Files without timestamps, non-seekable streams, or any
mismatch fall back to one sequential pass over the file that stops after the last needed frame.

Frame rate. ``fps`` is the stream's average frame rate (FFmpeg ``avg_frame_rate``, what
decord's ``get_avg_fps`` reports), else its guessed rate, else the frame count divided by the
stream duration, else ``(n - 1)`` over the pts span; ``source_fps=`` overrides all of them.
``duration = num_source_frames / fps`` seconds, as the original (``vlen / fps``).

Threads. ``threads="auto"`` (the default) decodes with one thread inside worker processes or
non-main threads (data loaders run many decoders side by side) and with FFmpeg's automatic
thread count otherwise; an integer ≥ 1 sets the count, 0 means FFmpeg's choice.

Errors a user can cause raise `VideoError` (a ValueError) naming the file.
"""

from __future__ import annotations

import bisect
import dataclasses
import multiprocessing
import os
import re
import threading
from fractions import Fraction
from typing import Any, Callable, Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from lvjax.errors import (  # VideoError re-exported: the message names the video
    UsageError,
    VideoError,
)
from lvjax.video.preprocess import resize_frames
from lvjax.video.sampling import FramePlan, plan_frames

__all__ = [
    "IMAGE_EXTENSIONS",
    "VideoError",
    "VideoFrames",
    "decode_all_frames",
    "from_array",
    "load_frames",
    "probe_video",
    "read_image_folder",
    "read_video",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")




@dataclasses.dataclass
class VideoFrames:
    """Sampled frames of a video.

    frames: (T, H, W, 3) uint8 RGB. indices: (T,) int64 source frame numbers (repeats when
    duplicated or padded). timestamps: (T,) float64 seconds of each frame from the first
    frame. fps: source frames/s. duration: seconds the time message reports (source frames /
    fps, or the window length). num_source_frames: frames in the whole source. time_msg:
    the prompt's time message. source: the path (or "<array>"). method: how the frames were
    read: "seek", "sequential" (file), "images" (folder) or "array".
    """

    frames: np.ndarray
    indices: np.ndarray
    fps: float
    duration: float
    num_source_frames: int
    time_msg: str
    timestamps: np.ndarray
    source: str = "<array>"
    method: str = "array"

    def __len__(self) -> int:
        return len(self.frames)


# ----------------------------------------------------------------------------- common


def _sampling_kwargs(fps, local_num_frames, max_num_frames, min_num_frames, start, end, duplicate_to_min,
                     rule="dynamic_fps1", max_fps=None) -> dict:
    if not (fps > 0):
        raise UsageError(f"fps (sampled frames per second) must be positive, got {fps!r}")
    return dict(target_fps=fps, local_num_frames=local_num_frames, max_num_frames=max_num_frames,
                min_num_frames=min_num_frames, start=start, end=end, duplicate_to_min=duplicate_to_min, rule=rule,
                max_fps=max_fps)


def _plan(name: str, vlen: int, video_fps: float, kw: dict) -> FramePlan:
    try:
        return plan_frames(vlen, video_fps, **kw)
    except ValueError as e:
        raise VideoError(f"{name}: {e}") from None


def _in_worker() -> bool:
    """True inside a child process or a non-main thread (a data-loader worker, typically)."""
    return multiprocessing.parent_process() is not None or threading.current_thread() is not threading.main_thread()


def _set_threads(stream, threads: int | str) -> None:
    if threads == "auto":
        threads = 1 if _in_worker() else 0
    if not isinstance(threads, int) or threads < 0:
        raise UsageError(f"threads must be 'auto' or an int >= 0, got {threads!r}")
    if threads == 1:
        stream.thread_type = "SLICE"
        stream.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.thread_count = threads  # 0: FFmpeg picks (one per core)


# ----------------------------------------------------------------------------- files


class _Fallback(Exception):
    """Internal: the seeking path cannot be trusted for this file; decode sequentially."""


@dataclasses.dataclass
class _Index:
    """The frame table of the first video stream (from the container index or a demux pass)."""

    num_frames: int              # non-empty video packets
    pts: np.ndarray | None       # (num_frames,) int64 sorted presentation timestamps, None if any is missing
    keyframes: np.ndarray        # (K,) int64 frame numbers of keyframes (sorted), empty if unknown
    time_base: Fraction | None
    fps: float
    fps_source: str
    width: int
    height: int
    source: str = "demux"        # "container": the container's own index, "demux": a packet scan


def _open(path: str):

    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video file (truncated or corrupt?): {_short(e)}") from None


def _short(e: BaseException) -> str:
    s = str(e)
    return s if len(s) < 200 else s[:200] + "…"


def _video_stream(container, path: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no"]
        raise VideoError(f"{path}: no video stream (the file has {', '.join(kinds)} streams only)")
    return container.streams.video[0]


def _resolve_fps(path: str, stream, n: int, pts: np.ndarray | None, tb: Fraction | None) -> tuple[float, str]:
    """Source frame rate: average rate → guessed rate → n / stream duration → (n - 1) / pts span."""
    for name in ("average_rate", "guessed_rate"):
        r = getattr(stream, name, None)
        if r is not None and float(r) > 0:
            return float(r), name
    if tb is not None and stream.duration and stream.duration > 0:
        return n / float(stream.duration * tb), "frames/duration"
    if pts is not None and tb is not None and n >= 2 and pts[-1] > pts[0]:
        return (n - 1) / float((pts[-1] - pts[0]) * tb), "frames/pts span"
    raise VideoError(f"{path}: no frame-rate metadata and no timestamps to derive it (pass source_fps=)")


def _container_index(path: str, stream) -> _Index | None:
    """The container's own sample index (MP4 ``stbl``, AVI ``idx1``), read without touching
    the packets; used only when it lists every frame and the codec does not reorder frames
    (then its timestamps, which are decode times, are the presentation times). None otherwise."""
    try:
        entries = stream.index_entries
        declared = stream.frames or 0
        if declared <= 0 or len(entries) != declared or stream.codec_context.has_b_frames:
            return None
        ts, key = [], []
        for e in entries:
            if e.is_discard or e.size <= 0:
                return None
            ts.append(e.timestamp)
            key.append(e.is_keyframe)
    except Exception:  # an index PyAV cannot expose: use the packet scan
        return None
    pts = np.asarray(ts, np.int64)
    order = np.argsort(pts, kind="stable")
    pts = pts[order]
    if len(pts) == 0 or np.any(np.diff(pts) <= 0):
        return None
    if stream.start_time is not None and int(pts[0]) != stream.start_time:  # decode times ≠ presentation times
        return None
    keyframes = np.flatnonzero(np.asarray(key, bool)[order]).astype(np.int64)
    if len(keyframes) == 0:
        return None
    fps, how = _resolve_fps(path, stream, len(pts), pts, stream.time_base)
    ctx = stream.codec_context
    return _Index(len(pts), pts, keyframes, stream.time_base, fps, how, ctx.width, ctx.height, "container")


def _scan(path: str, strict: bool, container_index: bool = False) -> _Index:
    """Frame count, sorted pts, keyframes and fps of the first video stream, without decoding:
    from the container's index when `container_index` and it is usable, else one demux pass."""

    with _open(path) as container:
        stream = _video_stream(container, path)
        if container_index:
            quick = _container_index(path, stream)
            if quick is not None:
                return quick
        pts, key, missing = [], [], False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    missing = True
                    pts.append(0)
                else:
                    pts.append(packet.pts)
                key.append(bool(packet.is_keyframe))
        except av.error.FFmpegError as e:
            if strict:
                raise VideoError(f"{path}: corrupt or truncated after {len(pts)} frames: {_short(e)}") from None
        n = len(pts)
        if n == 0:
            raise VideoError(f"{path}: the video stream holds no frames")
        tb = stream.time_base
        p = np.asarray(pts, np.int64)
        k = np.asarray(key, bool)
        if missing or len(np.unique(p)) != n:
            sorted_pts, keyframes = None, np.zeros(0, np.int64)
        else:
            order = np.argsort(p, kind="stable")
            sorted_pts, keyframes = p[order], np.flatnonzero(k[order]).astype(np.int64)
        fps, how = _resolve_fps(path, stream, n, sorted_pts, tb)
        if strict and sorted_pts is not None and tb is not None and n >= 2:
            # truncation: the frames present cover clearly less time than the header declares
            # (the video stream's duration, or the file's when it has no other stream). The
            # 10 % / 0.5 s slack keeps a long-held last frame (screen recordings) from counting.
            want = float(stream.duration * tb) if stream.duration else (
                container.duration / 1e6 if container.duration and len(container.streams) == 1 else None)
            have = float((sorted_pts[-1] - sorted_pts[0]) * tb) + 1.0 / fps
            if want is not None and have < 0.9 * want and want - have > max(0.5, 2.0 / fps):
                raise VideoError(f"{path}: truncated: the header declares {want:.2f} s, the frames cover {have:.2f} s")
        ctx = stream.codec_context
        return _Index(n, sorted_pts, keyframes, tb, fps, how, ctx.width, ctx.height)


def _runs(targets: Sequence[int], keyframes: np.ndarray, seek_cost: int) -> list[tuple[int, list[int]]]:
    """Group sorted frame numbers into (keyframe to seek to, frames decoded in one pass)."""
    keys = keyframes.tolist()
    runs: list[tuple[int, list[int]]] = []
    pos = None
    for t in targets:
        j = bisect.bisect_right(keys, t) - 1
        k = keys[j] if j >= 0 else 0
        if pos is not None and (k <= pos or t - pos <= t - k + seek_cost):
            runs[-1][1].append(t)
        else:
            runs.append((k, [t]))
        pos = t
    return runs


def _rgb_converter(resize_to=None):
    """frame → (H, W, 3) uint8 RGB, then PIL-bicubic resized when `resize_to` is set. One
    swscale context serves a whole read: the same pixels as ``frame.to_ndarray(format="rgb24")``,
    which builds a new context per call (several times slower on small frames)."""

    reformatter = VideoReformatter()
    if resize_to is None:
        return lambda frame: reformatter.reformat(frame, format="rgb24").to_ndarray()
    return lambda frame: _resize(reformatter.reformat(frame, format="rgb24").to_ndarray(), resize_to)


def _resize(rgb: np.ndarray, size) -> np.ndarray:
    """One (H, W, 3) uint8 frame through `preprocess.resize_frames` (PIL bicubic, no crop)."""

    return resize_frames(rgb[None], size)[0]


def _decode_seeking(path: str, index: _Index, targets: list[int], threads, seek_cost: int,
                    progress=None, resize_to=None) -> dict[int, np.ndarray]:

    pts = index.pts
    where = {int(p): i for i, p in enumerate(pts.tolist())}
    out: dict[int, np.ndarray] = {}
    to_rgb = _rgb_converter(resize_to)
    with _open(path) as container:
        stream = _video_stream(container, path)
        _set_threads(stream, threads)
        for key, run in _runs(targets, index.keyframes, seek_cost):
            need, last = set(run), run[-1]
            try:
                container.seek(int(pts[key]), stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                raise _Fallback from None
            first = True
            for frame in container.decode(stream):
                i = where.get(frame.pts) if frame.pts is not None else None
                if i is None:
                    raise _Fallback
                if first and index.source == "container" and i != key:
                    raise _Fallback  # without reordering the first frame after a seek is the keyframe
                first = False
                if i in need:
                    out[i] = to_rgb(frame)
                    if progress is not None:
                        progress(len(out), len(targets))
                if i >= last:
                    break
            if not need.issubset(out):
                raise _Fallback
    return out


def _decode_sequential(path: str, targets: list[int], threads, progress=None,
                       resize_to=None) -> tuple[dict[int, np.ndarray], int]:
    """One forward pass from the start, keeping `targets`; stops after the last. Returns the
    frames and how many frames were decoded (the true count when the pass hit the end)."""
    need, last = set(targets), max(targets)
    out: dict[int, np.ndarray] = {}
    count = 0
    to_rgb = _rgb_converter(resize_to)
    with _open(path) as container:
        stream = _video_stream(container, path)
        _set_threads(stream, threads)
        for i, frame in enumerate(container.decode(stream)):
            count = i + 1
            if i in need:
                out[i] = to_rgb(frame)
                if progress is not None:
                    progress(len(out), len(targets))
            if i >= last:
                break
    return out, count


def probe_video(path: str | os.PathLike, *, strict: bool = True, container_index: bool = False) -> dict:
    """Frame count, fps (and where it came from), duration (s), size, and whether the file can
    be read by seeking — without decoding: from one demux pass, or with `container_index`
    from the container's own index where it is usable (``index`` says which)."""
    path = _check_path(path)
    idx = _guard(path, lambda: _scan(path, strict, container_index=container_index))
    return dict(index=idx.source, num_frames=idx.num_frames, fps=idx.fps, fps_source=idx.fps_source, duration=idx.num_frames / idx.fps,
                width=idx.width, height=idx.height, seekable=idx.pts is not None and len(idx.keyframes) > 0,
                keyframes=len(idx.keyframes))


def _check_path(path) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file or directory")
    return path


def _guard(path: str, fn):
    """Run fn, turning any PyAV/FFmpeg error into a VideoError that names the file."""

    try:
        return fn()
    except VideoError:
        raise
    except (av.error.FFmpegError, EOFError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: cannot decode: {_short(e)}") from None


def read_video(path: str | os.PathLike, *, fps: float = 1.0, local_num_frames: int = 8, max_num_frames: int = 512,
               min_num_frames: int = 64, start: float | None = None, end: float | None = None,
               duplicate_to_min: bool = False, rule: str = "dynamic_fps1", max_fps: float | None = None,
               threads: int | str = "auto", seek: bool = True, seek_cost: int = 8,
               strict: bool = True, source_fps: float | None = None, image_fps: float = 1.0,
               progress: Callable[[int, int], None] | None = None,
               resize_to: int | tuple[int, int] | None = None) -> VideoFrames:
    """Decode the frames `dynamic_fps1` samples from a video file (or an image folder).

    fps: sampled frames per second of video (VideoChat-Flash 1, XComp 8).
    local_num_frames: clip length L (the frame count is a multiple of it when the video is
    long enough). max_num_frames / min_num_frames: caps (defaults: the HF `chat()` ones,
    512 / 64). start, end: optional window in seconds. duplicate_to_min: XComp's repetition
    of short videos up to min_num_frames (off = VideoChat-Flash). threads: decoder threads
    ("auto", see the module doc). seek: False decodes sequentially from the start (the
    reference path). seek_cost: frames of decoding one seek is worth (run grouping).
    strict: truncation / corrupt data raise VideoError; False reads what can be read.
    source_fps: override the stream's frame rate. image_fps: frame rate of an image folder.
    progress: called as progress(frames_done, frames_total) after each needed frame decodes.
    resize_to: resize each kept frame as soon as it decodes (PIL bicubic to size×size or
    (h, w), as `preprocess` does — so preprocessing gives the same result) to bound memory.

    Returns VideoFrames with frames (T, H, W, 3) uint8 RGB.
    """
    path = _check_path(path)
    if os.path.isdir(path):
        return read_image_folder(path, image_fps=image_fps, fps=fps, local_num_frames=local_num_frames,
                                 max_num_frames=max_num_frames, min_num_frames=min_num_frames, start=start, end=end,
                                 duplicate_to_min=duplicate_to_min, rule=rule, max_fps=max_fps, resize_to=resize_to)
    kw = _sampling_kwargs(fps, local_num_frames, max_num_frames, min_num_frames, start, end, duplicate_to_min,
                          rule, max_fps)
    index = _guard(path, lambda: _scan(path, strict, container_index=seek))

    def seeking(index: _Index):
        plan = _plan(path, index.num_frames, float(source_fps) if source_fps else index.fps, kw)
        if not (seek and index.pts is not None and len(index.keyframes)):
            return plan, None
        targets = np.unique(plan.indices).tolist()
        try:
            return plan, _guard(path, lambda: _decode_seeking(path, index, targets, threads, seek_cost, progress,
                                                                   resize_to))
        except _Fallback:
            return plan, None

    plan, frames = seeking(index)
    if frames is None and index.source == "container":  # the container index did not hold up
        index = _guard(path, lambda: _scan(path, strict))
        plan, frames = seeking(index)
    method, vlen = "seek", index.num_frames
    video_fps = float(source_fps) if source_fps else index.fps
    if frames is None:
        method = "sequential"
        targets = np.unique(plan.indices).tolist()
        frames, count = _guard(path, lambda: _decode_sequential(path, targets, threads, progress, resize_to))
        if len(frames) < len(targets):  # the stream decodes to fewer frames than it has packets
            if strict or count == 0:
                raise VideoError(f"{path}: corrupt or truncated: {count} frames decode, {vlen} packets")
            vlen = count
            plan = _plan(path, vlen, video_fps, kw)
            frames, _ = _guard(path, lambda: _decode_sequential(path, np.unique(plan.indices).tolist(), threads,
                                                                  progress, resize_to))
    try:
        stacked = np.stack([frames[i] for i in plan.indices.tolist()])
    except ValueError:
        raise VideoError(f"{path}: frame size changes inside the stream") from None
    if index.pts is not None and index.time_base is not None and vlen == index.num_frames:
        stamps = (index.pts[plan.indices] - index.pts[0]).astype(np.float64) * float(index.time_base)
    else:
        stamps = plan.indices / video_fps
    return VideoFrames(stacked, plan.indices, video_fps, plan.duration, vlen, plan.time_msg, stamps, path, method)


def decode_all_frames(path: str | os.PathLike, *, threads: int | str = "auto") -> np.ndarray:
    """Every frame (N, H, W, 3) uint8 RGB of the first video stream, decoded sequentially.

    The reference reader (tests, benchmark baseline); memory grows with the video."""
    path = _check_path(path)

    def run():
        with _open(path) as container:
            stream = _video_stream(container, path)
            _set_threads(stream, threads)
            to_rgb = _rgb_converter()
            return [to_rgb(f) for f in container.decode(stream)]

    frames = _guard(path, run)
    if not frames:
        raise VideoError(f"{path}: the video stream holds no frames")
    return np.stack(frames)


# ----------------------------------------------------------------------------- folders and arrays


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_image_folder(path: str | os.PathLike, *, image_fps: float = 1.0, fps: float = 1.0, local_num_frames: int = 8,
                      max_num_frames: int = 512, min_num_frames: int = 64, start: float | None = None,
                      end: float | None = None, duplicate_to_min: bool = False, rule: str = "dynamic_fps1",
                      max_fps: float | None = None, resize_to: int | tuple[int, int] | None = None) -> VideoFrames:
    """A folder of frame images as a video at `image_fps` frames/s (the original's default 1).

    Files with an image extension (IMAGE_EXTENSIONS), sorted by name with numbers compared as
    numbers (frame_2 before frame_10); only the sampled images are opened (PIL, RGB).
    """

    path = _check_path(path)
    if not os.path.isdir(path):
        raise VideoError(f"{path}: not a directory")
    names = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)
                    and os.path.isfile(os.path.join(path, f))), key=_natural_key)
    if not names:
        raise VideoError(f"{path}: the directory holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    kw = _sampling_kwargs(fps, local_num_frames, max_num_frames, min_num_frames, start, end, duplicate_to_min,
                          rule, max_fps)
    plan = _plan(path, len(names), float(image_fps), kw)
    cache: dict[int, np.ndarray] = {}
    for i in np.unique(plan.indices).tolist():
        file = os.path.join(path, names[i])
        try:
            with Image.open(file) as im:
                cache[i] = np.asarray(im.convert("RGB"), np.uint8)
            if resize_to is not None:
                cache[i] = _resize(cache[i], resize_to)
        except (OSError, ValueError) as e:
            raise VideoError(f"{file}: cannot read the image: {_short(e)}") from None
    try:
        frames = np.stack([cache[i] for i in plan.indices.tolist()])
    except ValueError:
        raise VideoError(f"{path}: the images differ in size") from None
    return VideoFrames(frames, plan.indices, float(image_fps), plan.duration, len(names), plan.time_msg,
                       plan.indices / float(image_fps), path, "images")


def from_array(frames: np.ndarray, video_fps: float, *, fps: float = 1.0, local_num_frames: int = 8,
               max_num_frames: int = 512, min_num_frames: int = 64, start: float | None = None,
               end: float | None = None, duplicate_to_min: bool = False, rule: str = "dynamic_fps1",
               max_fps: float | None = None, resize_to: int | tuple[int, int] | None = None) -> VideoFrames:
    """Sample an in-memory video: frames (N, H, W, 3) uint8 RGB at `video_fps` frames/s
    (`resize_to` as in `read_video`)."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise VideoError(f"<array>: expected uint8 frames (N, H, W, 3) with N > 0, got {arr.dtype} {arr.shape}")
    if not (video_fps and video_fps > 0):
        raise VideoError(f"<array>: video_fps must be positive, got {video_fps!r}")
    kw = _sampling_kwargs(fps, local_num_frames, max_num_frames, min_num_frames, start, end, duplicate_to_min,
                          rule, max_fps)
    plan = _plan("<array>", len(arr), float(video_fps), kw)
    out = arr[plan.indices]
    if resize_to is not None:

        out = resize_frames(out, resize_to)
    return VideoFrames(out, plan.indices, float(video_fps), plan.duration, len(arr), plan.time_msg,
                       plan.indices / float(video_fps), "<array>")


def load_frames(video: Any, *, fps: float = 1.0, local_num_frames: int = 8, max_num_frames: int = 512,
                min_num_frames: int = 64, start: float | None = None, end: float | None = None,
                video_fps: float | None = None, **options) -> VideoFrames:
    """One entry for every kind of video: a file path, an image folder, a (frames, video_fps)
    pair, or a uint8 array (N, H, W, 3) with `video_fps=`. Options go to `read_video`
    (files and folders: threads, seek, strict, source_fps, image_fps, progress; all kinds:
    duplicate_to_min, rule, max_fps, resize_to)."""
    common = dict(fps=fps, local_num_frames=local_num_frames, max_num_frames=max_num_frames,
                  min_num_frames=min_num_frames, start=start, end=end)
    if isinstance(video, VideoFrames):
        return video
    if isinstance(video, (str, os.PathLike)):
        return read_video(video, **common, **options)
    if isinstance(video, tuple) and len(video) == 2 and not isinstance(video[1], np.ndarray):
        video, video_fps = video
    if isinstance(video, np.ndarray) or hasattr(video, "__array__"):
        if video_fps is None:
            raise VideoError("<array>: an in-memory video needs its frame rate (video_fps=)")
        extra = {k: options.pop(k) for k in ("duplicate_to_min", "resize_to", "rule", "max_fps") if k in options}
        if options:
            raise TypeError(f"options {sorted(options)} apply to files only")
        return from_array(np.asarray(video), video_fps, **common, **extra)
    raise VideoError(f"{video!r}: not a video (path, image folder, or uint8 array (N, H, W, 3))")
