"""Video-XL's vision side: CLIP preprocessing → CLIP ViT patch tokens → `mlp2x_gelu` → 2×2 average pool.

Per frame (real sizes in brackets): 8×8 [24×24] patch tokens (CLS dropped) → projector into the
LLM width → `avg_pool2d(2)` over the patch grid → 4×4 [12×12] tokens, row-major. Frames are
concatenated frame-major: (frames · tokens_per_frame, D), what the LLM's windows consume.
A single image takes the same path per anyres crop (image.py): crop-major, 2×2-pooled.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from lvjax.families.video_xl.config import Preprocess, VideoXLConfig
from lvjax.models.clip import clip_apply
from lvjax.models.projector import Projector
from lvjax.video.preprocess import normalize, resize_crop


def clip_preprocess(frames: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 RGB (T, H, W, 3) → float32 (T, crop_h, crop_w, 3) as `CLIPImageProcessor`.

    Shortest edge → `pre.resize` (the other int(resize · long / short)), PIL bicubic; centre
    crop (offsets (H − h) // 2, (W − w) // 2); ×1/255; (x − mean) / std.
    """
    return normalize(resize_crop(frames, pre.resize, pre.crop), pre.mean, pre.std)


def projector(cfg: VideoXLConfig) -> Projector:
    """`mlp2x_gelu`: Linear(C → D), exact GELU, Linear(D → D); params mlp_0 / mlp_2 (`mm_projector.0/.2`)."""
    return Projector(cfg.llm.hidden_size, dtype=cfg.llm.dtype, param_dtype=cfg.llm.param_dtype)


def pool(x: jax.Array, grid: int, stride: int) -> jax.Array:
    """(F, grid², D) row-major → (F, (grid/stride)², D): mean of each stride×stride block."""
    f, _, d = x.shape
    g = grid // stride
    return x.reshape(f, g, stride, g, stride, d).mean(axis=(2, 4)).reshape(f, g * g, d)


@functools.partial(jax.jit, static_argnames=("cfg", "intermediates", "stride"))
def encode_pixels(params: dict, pixels: jax.Array, *, cfg: VideoXLConfig, intermediates: bool = False,
                  stride: int | None = None):
    """pixels (F, S, S, 3) → visual tokens (F · (grid/stride)², D) (and the stages when asked).

    stride: the pool (default `cfg.pool_stride`, what frames get; image crops use 2, image.py)."""
    vit = clip_apply(params["vision"], cfg.clip, pixels)[:, 1:]
    proj = projector(cfg).apply({"params": params["projector"]}, vit)
    pooled = pool(proj, cfg.clip.grid, stride or cfg.pool_stride)
    tokens = pooled.reshape(-1, pooled.shape[-1])
    return (tokens, {"vision": vit, "projector": proj, "pooled": pooled}) if intermediates else (tokens, {})
