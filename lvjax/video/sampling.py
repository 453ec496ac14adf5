"""Frame sampling of VideoChat-Flash / XComp (`mm_utils.get_frame_indices`, `load_video`).

All functions are pure: integers in, NumPy int64 index arrays out. Units: `vlen` and every
index count source frames; `video_fps` is frames per second of the source; `target_fps`
is sampled frames per second of video; `start`/`end`/`duration` are seconds.

The rule (sample type ``dynamic_fps1``, then "middle" sampling), for a video of ``vlen``
frames at ``video_fps``, clip length ``L = local_num_frames``:

0. if ``L > vlen``: return ``[i * vlen // L for i in range(L)]`` (L frames, repeats allowed);
1. if ``min_num_frames > vlen``: ``min_num_frames = (vlen // L) * L``;
2. ``duration = vlen / video_fps``; ``num_segments = int(target_fps * duration // L)``;
3. ``num_frames = L * num_segments`` (``L`` when that is 0);
4. if ``max_num_frames > 0``: ``num_frames = min(num_frames, max_num_frames)``;
5. if ``num_frames > vlen``: ``num_frames = (vlen // L) * L``;
6. ``num_frames = max(min_num_frames, num_frames)``;
7. ``edges = np.linspace(0, vlen, min(num_frames, vlen) + 1).astype(int)``; frame k is the
   middle of ``[edges[k], edges[k+1] - 1]``, i.e. ``(edges[k] + edges[k+1] - 1) // 2``;
8. pad with the last index up to ``num_frames``.

Note on step 7: the original takes ``(a + b) // 2`` of the *inclusive* interval
``(a, b) = (edges[k], edges[k+1] - 1)``; this module follows the code.

XComp (ver6/ver7 ``load_video``) then duplicates short results: when fewer than the
*requested* ``min_num_frames`` (before step 1 lowered it) were sampled, the n sampled
frames are repeated to ``min_num_frames`` with ``[int(i * n / min_num_frames) ...]`` and the
time message reports that count. VideoChat-Flash's own ``load_video`` does not; here it is
the ``duplicate_to_min`` switch.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = [
    "RULES",
    "FramePlan",
    "fps_cap_indices",
    "fps_max_indices",
    "linspace_indices",
    "rounded_timestamps",
    "clip_window",
    "duplicate_indices",
    "num_sampled_frames",
    "plan_frames",
    "sample_frame_indices",
    "time_message",
]


def time_message(duration: float, num_frames: int) -> str:
    """The prompt's time message exactly as the original (leading newline, trailing space).

    duration: seconds (printed with 2 decimals); num_frames: frames given to the model.
    """
    return f"\nThe video lasts for {duration:.2f} seconds, and {num_frames} frames are uniformly sampled from it. "


def _check(vlen: int, video_fps: float, local_num_frames: int) -> None:
    if int(vlen) != vlen or vlen < 1:
        raise ValueError(f"vlen must be a positive frame count, got {vlen!r}")
    if not (video_fps > 0 and math.isfinite(video_fps)):
        raise ValueError(f"video_fps must be a positive number of frames per second, got {video_fps!r}")
    if int(local_num_frames) != local_num_frames or local_num_frames < 1:
        raise ValueError(f"local_num_frames must be a positive integer, got {local_num_frames!r}")


def num_sampled_frames(vlen: int, video_fps: float, *, target_fps: float = 1.0, local_num_frames: int = 8,
                       max_num_frames: int = 512, min_num_frames: int = 64) -> int:
    """Number of frames `dynamic_fps1` samples from `vlen` frames (steps 0–6 of the module rule)."""
    _check(vlen, video_fps, local_num_frames)
    L = int(local_num_frames)
    if L > vlen:
        return L
    if min_num_frames > vlen:
        min_num_frames = (vlen // L) * L
    duration = float(vlen) / video_fps
    num_segments = int(target_fps * duration // L)
    num_frames = L * num_segments if num_segments else L
    if max_num_frames > 0:
        num_frames = min(num_frames, max_num_frames)
    if num_frames > vlen:
        num_frames = (vlen // L) * L
    return int(max(min_num_frames, num_frames))


def sample_frame_indices(vlen: int, video_fps: float, *, target_fps: float = 1.0, local_num_frames: int = 8,
                         max_num_frames: int = 512, min_num_frames: int = 64) -> np.ndarray:
    """Indices (num_frames,) int64 in [0, vlen) of the frames `dynamic_fps1` + "middle" picks.

    vlen: source frames; video_fps: source frames/s; target_fps: sampled frames per second of
    video (VideoChat-Flash 1, XComp 8); local_num_frames: clip length L; max_num_frames ≤ 0
    means no cap. No duplication to `min_num_frames` here (see `plan_frames`).
    """
    n = num_sampled_frames(vlen, video_fps, target_fps=target_fps, local_num_frames=local_num_frames,
                           max_num_frames=max_num_frames, min_num_frames=min_num_frames)
    L = int(local_num_frames)
    if L > vlen:
        return np.arange(L, dtype=np.int64) * vlen // L
    acc = min(n, vlen)
    edges = np.linspace(0, vlen, acc + 1).astype(int).astype(np.int64)
    idx = (edges[:-1] + edges[1:] - 1) // 2
    if acc < n:
        idx = np.concatenate([idx, np.full(n - acc, idx[-1], np.int64)])
    return idx


def duplicate_indices(num_sampled: int, min_num_frames: int) -> np.ndarray:
    """Positions (min_num_frames,) int64 into the sampled list that repeat it uniformly:
    ``int(i * num_sampled / min_num_frames)`` for i in range(min_num_frames) (XComp)."""
    i = np.arange(min_num_frames, dtype=np.int64)
    return np.array([int(k * num_sampled / min_num_frames) for k in i.tolist()], np.int64)


def clip_window(vlen: int, video_fps: float, start: float | None, end: float | None) -> tuple[int, int, float]:
    """A [start, end] seconds window, as the original decord reader cuts it.

    Returns (first_frame, window_vlen, duration_s): ``start = max(0, start)``,
    ``end = min(vlen / fps - 0.1, end)``, ``duration = end - start``,
    ``window_vlen = int(duration * fps)``, ``first_frame = int(start * fps)``.
    With neither bound the whole video: (0, vlen, vlen / fps). A missing bound means the
    video's start / end. Raises ValueError when the window holds no frame.
    """
    full = float(vlen) / video_fps
    if start is None and end is None:
        return 0, int(vlen), full
    s = max(0.0, float(start if start is not None else 0.0))
    e = min(full - 0.1, float(end if end is not None else full))
    duration = e - s
    n = int(duration * video_fps)
    first = int(s * video_fps)
    if n < 1 or first >= vlen:
        raise ValueError(f"window [{start}, {end}] s holds no frame of a {full:.2f} s video")
    n = min(n, vlen - first)
    return first, n, duration


RULES = ("dynamic_fps1", "linspace", "fps_max", "fps_cap")


@dataclasses.dataclass(frozen=True)
class FramePlan:
    """What to read: `indices` (T,) int64 into the source frames (with duplicates when
    duplicated), the `duration` (s) the message reports, the message, and the sampled
    count before duplication."""

    indices: np.ndarray
    duration: float
    time_msg: str
    num_sampled: int


def plan_frames(vlen: int, video_fps: float, *, target_fps: float = 1.0, local_num_frames: int = 8,
                max_num_frames: int = 512, min_num_frames: int = 64, start: float | None = None,
                end: float | None = None, duplicate_to_min: bool = False, rule: str = "dynamic_fps1",
                max_fps: float | None = None) -> FramePlan:
    """The whole `load_video` plan: window → sample → (optionally) duplicate → message.

    rule: one of RULES — 'dynamic_fps1' (VideoChat-Flash, above), 'linspace' (Video-XL,
    Video-XL-Pro: `max_num_frames` uniform indices), 'fps_max' (Video-XL-2: `fps_max_indices`), 'fps_cap'
    (Video-XL-Pro's training reader: `fps_cap_indices`).

    Order as the original: the window (if any) is cut first and sampled as a video of its own
    `window_vlen` frames, indices are shifted by its first frame; then, with
    `duplicate_to_min`, a result shorter than `min_num_frames` is repeated up to it.
    """
    first, n, duration = clip_window(vlen, video_fps, start, end)
    if rule == "dynamic_fps1":
        idx = sample_frame_indices(n, video_fps, target_fps=target_fps, local_num_frames=local_num_frames,
                                   max_num_frames=max_num_frames, min_num_frames=min_num_frames) + first
    elif rule == "linspace":
        idx = linspace_indices(n, max_num_frames) + first
    elif rule == "fps_max":
        idx = fps_max_indices(n, video_fps, fps=target_fps, max_fps=max_fps, max_frames=max_num_frames) + first
    elif rule == "fps_cap":
        idx = fps_cap_indices(n, video_fps, fps=target_fps, max_frames=max_num_frames) + first
    else:
        raise ValueError(f"unknown sampling rule {rule!r} (one of {', '.join(RULES)})")
    sampled = len(idx)
    if duplicate_to_min and sampled < min_num_frames:
        idx = idx[duplicate_indices(sampled, min_num_frames)]
    return FramePlan(idx, duration, time_message(duration, len(idx)), sampled)


# ----------------------------------------------------------------------------- Video-XL-Pro / Video-XL-2


def linspace_indices(vlen: int, max_frames: int) -> np.ndarray:
    """Uniform indices (max_frames,) int64: ``np.linspace(0, vlen - 1, max_frames, dtype=int)``
    (Video-XL-Pro `demo_utils.load_video`; repeats when max_frames > vlen)."""
    _check(vlen, 1.0, 1)
    if int(max_frames) != max_frames or max_frames < 1:
        raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
    return np.linspace(0, vlen - 1, int(max_frames), dtype=int).astype(np.int64)


def fps_max_indices(vlen: int, video_fps: float, *, fps: float = 1.0, max_fps: float | None = 4.0,
                    max_frames: int = 48) -> np.ndarray:
    """Video-XL-2's lmms-eval `load_video(max_frames_num, fps, max_fps)` indices, int64.

    1. ``step = round(video_fps / fps)``; ``idx = range(0, vlen, step)``;
    2. ``higher = min(max_frames // len(idx), max_fps)``; if ``higher > fps``:
       ``idx = range(0, vlen, round(video_fps / higher))`` (a denser rate when the budget allows);
    3. if ``max_frames > 0`` and ``len(idx) > max_frames``: ``np.linspace(0, vlen - 1, max_frames, dtype=int)``;
    4. the last ``len(idx) % 4`` indices are dropped (groups of 4 frames).
    Raises ValueError when nothing is left (fewer than 4 candidate frames).
    """
    _check(vlen, video_fps, 1)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    rate = fps
    if max_fps is not None:
        higher = min(max_frames // len(range(0, vlen, max(round(video_fps / fps), 1))), max_fps)
        rate = higher if higher > fps else fps
    idx = fps_cap_indices(vlen, video_fps, fps=rate, max_frames=max_frames)  # steps 1 (at `rate`) and 3
    idx = idx[:len(idx) - len(idx) % 4]
    if len(idx) == 0:
        raise ValueError(f"a {vlen}-frame video gives fewer than 4 frames at {fps} fps (Video-XL-2 needs groups of 4)")
    return idx


def fps_cap_indices(vlen: int, video_fps: float, *, fps: float = 1.0, max_frames: int = 0) -> np.ndarray:
    """Video-XL-Pro's training reader (`utils.process_video_with_pyav`) indices, int64: every
    ``round(video_fps / fps)``-th frame, or ``np.linspace(0, vlen − 1, max_frames, dtype=int)`` when that gives
    more than ``max_frames`` (> 0). No remainder is dropped (the model duplicates frames up to groups of 4)."""
    _check(vlen, video_fps, 1)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    idx = np.arange(0, vlen, max(round(video_fps / fps), 1), dtype=np.int64)
    if max_frames > 0 and len(idx) > max_frames:
        idx = np.linspace(0, vlen - 1, max_frames, dtype=int).astype(np.int64)
    return idx


def rounded_timestamps(seconds) -> list[float]:
    """``[round(t, 1) for t in seconds]`` with t = index / video_fps (`VideoFrames.timestamps`): the
    seconds Video-XL-Pro / -2 write in their time prompts (Python float rounding, as the original)."""
    return [round(float(t), 1) for t in np.asarray(seconds, np.float64).tolist()]
