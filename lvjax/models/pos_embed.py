"""The UMT ViT's fixed sinusoid positional table, rebuilt in NumPy exactly as the original.

The table is not a parameter: the original computes it at construction from the clip length
and the image size. Two paths exist (chosen, as in the original, by `image_size == 224`):

* **224 path** (`umt-large`): a 1-D transformer sinusoid table over T·grid² positions; when
  T differs from the checkpoint frame count, the table is built for `ckpt_num_frame` frames
  and resized over time with torch-style *linear* interpolation.
* **other sizes** (`umt-hd-*`, 448 px): a 1-D table over `ckpt_num_frame`·14·14 positions
  (the 224 px pretraining grid, hard-coded to 14 in the original), viewed as (ckpt, 14, 14, C),
  resized spatially with torch *bicubic* (a = −0.75) to grid×grid, then linearly over time.

Single images (T == 1) use the image table: 196 positions (or grid² on the 224 path) → bicubic
to grid². Generalisation beyond the original: the checkpoint table has `ckpt_num_frame`·196
positions (the original hard-codes 784, correct only for ckpt_num_frame = 4), and the bicubic
step is always applied (the original skips it when T·grid² happens to equal 784, where it is
either the identity or a reshape error).

The interpolation kernels reproduce `torch.nn.functional.interpolate(..., align_corners=False)`
on CPU float32 (`jax.image.resize('cubic')` uses a = −0.5 and differs): coordinates, weights
and the tap sums are evaluated in float32 in torch's order.
"""

from __future__ import annotations

import functools

import numpy as np

PRETRAIN_GRID = 14  # UMT was pretrained at 224 px with patch 16
CUBIC_A = -0.75  # torch's bicubic convolution constant


def sinusoid_table(n_position: int, dim: int) -> np.ndarray:
    """Transformer sinusoid table (n_position, dim) float32, built in float64 then cast.

    angle(pos, j) = pos / 10000^(2·(j//2)/dim); even j → sin, odd j → cos.
    """
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angle = pos / np.power(10000.0, 2.0 * (j // 2) / dim)[None, :]
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def _source_coords(n_in: int, n_out: int) -> np.ndarray:
    """torch's align_corners=False source coordinate in float32: (dst + 0.5)·(in/out) − 0.5."""
    scale = np.float32(n_in) / np.float32(n_out)
    return scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)


def _cubic_weights(t: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
    """Keys cubic-convolution weights of the taps at offsets −1, 0, 1, 2 → (n, 4) float32.

    Evaluated in float32 with torch's formulas (the last tap uses (1 − t) + 1, as torch).
    """
    a = np.float32(a)
    one = np.float32(1)

    def near(x):  # |x| ≤ 1
        return ((a + 2) * x - (a + 3)) * x * x + one

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    t = t.astype(np.float32)
    u = one - t
    return np.stack([far(t + one), near(t), near(u), far(u + one)], axis=-1).astype(np.float32)


def _weighted_taps(x: np.ndarray, idx: list[np.ndarray], w: np.ndarray, axis: int) -> np.ndarray:
    """Σ_k x[..., idx_k] · w[:, k] along `axis`, accumulated in float32 in tap order (as torch)."""
    x = np.moveaxis(np.asarray(x, np.float32), axis, -1)
    out = x[..., idx[0]] * w[:, 0]
    for k in range(1, len(idx)):
        out = out + x[..., idx[k]] * w[:, k]
    return np.moveaxis(out.astype(np.float32), -1, axis)


def resize_cubic(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Bicubic resize of one axis to `size`, as torch (a = −0.75, align_corners=False, border clamp).

    float32 in and out. Apply it to W, then H, to reproduce torch's 2-D bicubic.
    """
    n_in = x.shape[axis]
    src = _source_coords(n_in, size)  # not clamped at 0 for cubic
    i0 = np.minimum(np.floor(src), np.float32(n_in - 1))
    t = np.clip(src - i0, np.float32(0), np.float32(1))
    i0 = i0.astype(np.int64)
    idx = [np.clip(i0 - 1 + k, 0, n_in - 1) for k in range(4)]
    return _weighted_taps(x, idx, _cubic_weights(t), axis)


def resize_linear(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear resize of one axis to `size`, as torch (align_corners=False, source clamped at 0).

    float32 in and out.
    """
    n_in = x.shape[axis]
    src = np.maximum(_source_coords(n_in, size), np.float32(0))
    i0 = np.minimum(np.floor(src), np.float32(n_in - 1))
    l1 = np.clip(src - i0, np.float32(0), np.float32(1))
    i0 = i0.astype(np.int64)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    w = np.stack([np.float32(1) - l1, l1], axis=-1).astype(np.float32)
    return _weighted_taps(x, [i0, i1], w, axis)


def bicubic_2d(x: np.ndarray, size: int, axes: tuple[int, int]) -> np.ndarray:
    """Square bicubic resize of the (H, W) axes of a float32 array; result float32."""
    h_axis, w_axis = axes
    return resize_cubic(resize_cubic(x, size, w_axis), size, h_axis)


@functools.lru_cache(maxsize=32)
def _umt_pos_embed_cached(image_size: int, patch_size: int, dim: int, num_frames: int, ckpt_num_frame: int) -> np.ndarray:
    grid = image_size // patch_size
    if image_size == 224:  # `get_sinusoid_encoding_table` path: no spatial resize
        if num_frames == 1:
            return sinusoid_table(grid * grid, dim)
        if ckpt_num_frame in (-1, num_frames):
            return sinusoid_table(num_frames * grid * grid, dim)
        table = sinusoid_table(ckpt_num_frame * grid * grid, dim).reshape(ckpt_num_frame, grid, grid, dim)
    else:  # `get_sinusoid_encoding_table2` path: bicubic from the 14×14 pretraining grid
        p = PRETRAIN_GRID
        if num_frames == 1:
            table = sinusoid_table(p * p, dim).reshape(1, p, p, dim)
            return bicubic_2d(table, grid, (1, 2)).reshape(grid * grid, dim)
        ckpt = num_frames if ckpt_num_frame == -1 else ckpt_num_frame
        table = sinusoid_table(ckpt * p * p, dim).reshape(ckpt, p, p, dim)
        table = bicubic_2d(table, grid, (1, 2))
    if table.shape[0] != num_frames:
        table = resize_linear(table, num_frames, axis=0)
    return table.reshape(num_frames * grid * grid, dim)


def umt_pos_embed(
    image_size: int, patch_size: int, dim: int, num_frames: int, ckpt_num_frame: int = 4
) -> np.ndarray:
    """The positional table of one clip: (num_frames·grid², dim) float32, tokens in (t, h, w) order.

    `num_frames` is the clip length T (T == 1 gives the single-image table). The result is
    cached and read-only.
    """
    out = _umt_pos_embed_cached(int(image_size), int(patch_size), int(dim), int(num_frames), int(ckpt_num_frame))
    out.flags.writeable = False
    return out


def vision_pos_embed(cfg, num_frames: int | None = None) -> np.ndarray:
    """`umt_pos_embed` for a `UMTConfig` (T defaults to cfg.num_frames // tubelet_size)."""
    t = cfg.num_frames // cfg.tubelet_size if num_frames is None else num_frames
    return umt_pos_embed(cfg.image_size, cfg.patch_size, cfg.hidden_size, t, cfg.ckpt_num_frame)
