"""Frames → model input, exactly as `UMTImageProcessor` (bit-identical in float32).

Per frame: PIL bicubic resize to (size, size) — aspect ratio ignored, no crop — then
``x * (1/255)`` in float64 cast to float32, then ``(x - mean) / std`` in float32 with the
ImageNet mean/std. Output layout is channels-last (T, H, W, 3) float32, what the Flax
patch-embedding Conv takes; the original's CHW tensor is ``out.transpose(0, 3, 1, 2)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lvjax.errors import MediaError, UsageError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize", "preprocess", "resize_frames"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise UsageError(f"size must be positive, got {size!r}")
    return int(h), int(w)


def resize_frames(frames: np.ndarray, size: int | tuple[int, int] = 448) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, h, w, 3) uint8 with PIL bicubic, size = h = w or (h, w).

    Frames already at the size are returned unchanged (PIL's resize is the identity there)."""
    frames = _check_frames(frames)
    h, w = _hw(size)
    if frames.shape[1:3] == (h, w):
        return frames
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for t, f in enumerate(frames):
        out[t] = np.asarray(Image.fromarray(f, "RGB").resize((w, h), Image.BICUBIC))
    return out


def resize_crop(frames: np.ndarray, resize: int, crop: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, crop_h, crop_w, 3) uint8 as `CLIPImageProcessor` before rescaling:
    shortest edge → `resize` (the other int(resize · long / short)), PIL bicubic, then the centre
    crop at offsets ((h − crop_h) // 2, (w − crop_w) // 2)."""
    frames = np.asarray(frames)
    h, w = frames.shape[1:3]
    size = (resize, int(resize * w / h)) if h <= w else (int(resize * h / w), resize)
    frames = resize_frames(frames, size)
    ch, cw = crop
    top, left = (size[0] - ch) // 2, (size[1] - cw) // 2
    return frames[:, top:top + ch, left:left + cw]


def normalize(frames, mean=IMAGENET_MEAN, std=IMAGENET_STD, xp=np):
    """(…, 3) uint8 → float32 ``(x * (1/255) - mean) / std``.

    With numpy the rescale is in float64 then cast (bit-identical to the processor); with
    `xp=jax.numpy` (inside jit, training) everything is float32.
    """
    if xp is np:
        x = (np.asarray(frames).astype(np.float64) * (1 / 255)).astype(np.float32)
    else:
        x = frames.astype(xp.float32) * xp.float32(1 / 255)
    return (x - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)


def preprocess(frames: np.ndarray, size: int | tuple[int, int] = 448, *, mean=IMAGENET_MEAN,
               std=IMAGENET_STD) -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3) (or one frame (H, W, 3)) → float32 (T, size, size, 3).

    Resize (PIL bicubic, no crop), rescale by 1/255, normalize; see the module docstring."""
    frames = np.asarray(frames)
    single = frames.ndim == 3
    out = normalize(resize_frames(frames[None] if single else frames, size), mean, std)
    return out[0] if single else out


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise MediaError(f"expected RGB frames (T, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise MediaError(f"expected uint8 frames, got {frames.dtype}")
    return frames
