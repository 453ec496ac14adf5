"""Synthetic test videos encoded with PyAV: every frame shows its own index.

A frame is a grid of 4×2 black/white blocks spelling its index in binary (bit 0 top-left,
row-major), over a tint that changes with the index. Lossy codecs keep the blocks readable,
so `frame_number(decoded)` recovers which source frame a decoded frame is.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

GRID = (2, 4)  # rows, columns of bit blocks → up to 256 frame numbers


def frame_image(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """uint8 (height, width, 3) RGB frame that carries the number `i` (0 ≤ i < 256)."""
    rows, cols = GRID
    img = np.empty((height, width, 3), np.uint8)
    img[...] = ((37 * i) % 64 + 96, (91 * i) % 64 + 96, (53 * i) % 64 + 96)
    bh, bw = height // rows, width // cols
    for b in range(rows * cols):
        r, c = divmod(b, cols)
        v = 235 if (i >> b) & 1 else 16
        img[r * bh + 2:(r + 1) * bh - 2, c * bw + 2:(c + 1) * bw - 2] = v
    return img


def frame_number(img: np.ndarray) -> int:
    """The number drawn by `frame_image` (reads the centre of every block)."""
    rows, cols = GRID
    h, w = img.shape[:2]
    bh, bw = h // rows, w // cols
    n = 0
    for b in range(rows * cols):
        r, c = divmod(b, cols)
        patch = img[r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        if patch.mean() > 128:
            n |= 1 << b
    return n


CODECS = {  # container suffix → (codec, extra options)
    "mp4": ("libx264", {"preset": "ultrafast", "tune": "zerolatency"}),
    "webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}),
    "avi": ("mpeg4", {}),
}


def write_video(path: str | os.PathLike, num_frames: int, *, fps: float = 25, pts: Sequence[int] | None = None,
                time_base: Fraction | None = None, gop: int = 12, width: int = 64, height: int = 48,
                codec: str | None = None, bframes: int = 0, options: dict | None = None,
                faststart: bool = False) -> Path:
    """Encode `num_frames` numbered frames into `path` (codec chosen from the suffix).

    fps: nominal rate (frames/second). pts: explicit per-frame timestamps in units of
    `time_base` (variable frame rate when the gaps differ); default i / fps.
    gop: keyframe interval in frames. bframes: max consecutive B-frames (H.264 / MPEG-4).
    options: encoder options added to the defaults of CODECS. faststart: MP4 index (moov) first.
    """
    path = Path(path)
    suffix = path.suffix.lstrip(".")
    name, opts = CODECS[suffix] if codec is None else (codec, {})
    opts = {**opts, **(options or {})}
    if name == "libx264":
        opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
        if bframes:
            opts.pop("tune", None)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None) as out:
        stream = out.add_stream(name, rate=rate, options=opts)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        if name == "mpeg4":
            stream.codec_context.max_b_frames = bframes
        if pts is not None:
            tb = time_base or Fraction(1, 1000)
            stream.codec_context.time_base = tb
            stream.time_base = tb
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = int(pts[i]), stream.codec_context.time_base
            else:
                frame.pts = i
                frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> Path:
    """A file with one AAC audio stream and no video stream."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        n = int(16000 * seconds)
        t = np.arange(n) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for k in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, k:k + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_zero_frames(path: str | os.PathLike) -> Path:
    """A valid container header with a video stream that holds no frames (use .avi: the
    Matroska/WebM muxer cannot write an empty track)."""
    path = Path(path)
    name, opts = CODECS[path.suffix.lstrip(".")]
    out = av.open(str(path), "w")
    stream = out.add_stream(name, rate=25, options=dict(opts))
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    out.start_encoding()  # header and index, no packets
    out.close()
    return path


def truncate(src: str | os.PathLike, dst: str | os.PathLike, keep: float) -> Path:
    """Copy the first `keep` fraction (0..1) of the bytes of `src` to `dst`."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def decode_all(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of the first video stream, decoded sequentially (the reference reader)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
