"""Small synthetic videos for generated benchmarks, encoded with PyAV (H.264, constant frame rate)."""

from __future__ import annotations

import os
from typing import Iterable

import av
import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 230), "yellow": (235, 220, 40),
           "white": (245, 245, 245), "purple": (150, 50, 190), "orange": (245, 140, 20), "cyan": (30, 210, 220)}


def background(i: int, size: int) -> np.ndarray:
    """uint8 (size, size, 3) frame i of a slowly drifting dark gradient (the haystack)."""
    yy, xx = np.mgrid[0:size, 0:size]
    shift = (i * 3) % size
    r = ((xx + shift) % size) * 96 // size
    g = ((yy + 2 * shift) % size) * 96 // size
    b = np.full_like(xx, 40 + (i * 5) % 40)
    return np.stack([r, g, b], -1).astype(np.uint8)


def with_square(img: np.ndarray, colour: str, x: int, y: int, side: int) -> np.ndarray:
    out = img.copy()
    out[y:y + side, x:x + side] = COLOURS[colour]
    return out


def write_mp4(path: str, frames: Iterable[np.ndarray], fps: int = 4, crf: int = 12) -> str:
    """Encode uint8 RGB frames (all the same even size) as H.264 MP4; frame k has pts k."""

    frames = iter(frames)
    first = next(frames)
    tmp = path + ".tmp.mp4"
    with av.open(tmp, "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "ultrafast"})
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        for k, img in enumerate([first, *frames]):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def corrupt(path: str, keep: float = 0.3) -> None:
    """Keep only the first `keep` fraction of the file's bytes (the MP4 index at the end is lost)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
