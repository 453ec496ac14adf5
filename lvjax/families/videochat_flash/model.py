"""VideoChat-Flash / XComp: frames → UMT ViT → ToMe → MLP projector → spliced into Qwen2.

Parameter tree: {"vision": UMT ViT, "projector": MLP, "llm": Qwen2}. The HF keys are
`model.vision_tower.vision_tower.encoder.*`, `model.mm_projector.mlp.{0,2}.*` and the Qwen2
`model.*` / `lm_head.weight` keys (see convert/).

Prompt layout inside the model (static shapes): one row is
    [text before <image>] [n_visual visual slots] [text after <image>] [padding slots]
so the visual block sits at the static offset `visual_start`; the padding lies behind every real
token (packed, see `llm.prefill`; frame-bucket padding ends the visual block of a prompt without
text after it). Padding slots are masked and skipped by positions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lvjax.config import ConfigError, LLMConfig
from lvjax.models import llm
from lvjax.models.projector import Projector
from lvjax.models.qwen2 import Qwen2
from lvjax.models.stack import chunked_map
from lvjax.models.tome import merge_clips
from lvjax.models.umt import UMTConfig, UMTVisionTower

SUPPORTED_PROJECTORS = ("tome16_mlp_hd64",)


@dataclasses.dataclass(frozen=True)
class VideoChatFlashConfig:
    """The three towers' configs plus the multimodal fields of `config.json`."""

    llm: LLMConfig
    vision: UMTConfig
    mm_hidden_size: int
    tokens_per_frame: int = 16  # ToMe target per frame ("tome16")
    default_compression: str = "none"
    compress_layers: tuple[int, ...] = ()
    compress_ratios: tuple[float, ...] = ()

    @property
    def local_num_frames(self) -> int:
        """Frames per ViT clip (L)."""
        return self.vision.num_frames

    def replace(self, **kw) -> "VideoChatFlashConfig":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "VideoChatFlashConfig":
        projector = hf.get("mm_projector_type")
        if projector not in SUPPORTED_PROJECTORS:
            raise ConfigError(f"{source}: mm_projector_type={projector!r} is not supported (supported: {SUPPORTED_PROJECTORS})")
        vision = UMTConfig.from_hf(hf, source)
        mm_hidden = int(hf.get("mm_hidden_size", vision.hidden_size))
        if mm_hidden != vision.hidden_size:
            raise ConfigError(f"{source}: mm_hidden_size={mm_hidden} differs from the vision width {vision.hidden_size}")
        compression = "none"
        if hf.get("mm_llm_compress"):
            compression = str(hf.get("llm_compress_type", "attention"))
        return cls(
            llm=LLMConfig.from_hf(hf, source),
            vision=vision,
            mm_hidden_size=mm_hidden,
            default_compression=compression,
            compress_layers=tuple(int(x) for x in hf.get("llm_compress_layer_list") or ()),
            compress_ratios=tuple(float(x) for x in hf.get("llm_image_token_ratio_list") or ()),
        )

    def with_dtypes(self, dtype: str, param_dtype: str) -> "VideoChatFlashConfig":
        return self.replace(
            llm=self.llm.replace(dtype=dtype, param_dtype=param_dtype),
            vision=self.vision.replace(dtype=dtype, param_dtype=param_dtype),
        )


# ----------------------------------------------------------------------------- towers


def _vision_modules(cfg: VideoChatFlashConfig):
    return UMTVisionTower(cfg.vision), Projector(cfg.llm.hidden_size, dtype=cfg.llm.dtype, param_dtype=cfg.llm.param_dtype)


def init_params(cfg: VideoChatFlashConfig, key: jax.Array) -> dict:
    """Boxed (logically partitioned) parameters of the three towers."""
    k1, k2, k3 = jax.random.split(key, 3)
    vision, projector = _vision_modules(cfg)
    v = cfg.vision
    clip = jnp.zeros((1, v.num_frames, v.image_size, v.image_size, 3), jnp.float32)
    return {
        "vision": vision.init(k1, clip)["params"],
        "projector": projector.init(k2, jnp.zeros((1, 1, cfg.mm_hidden_size)))["params"],
        "llm": Qwen2(cfg.llm).init(k3, jnp.zeros((1, 1), jnp.int32))["params"],
    }


def vision_features(params: dict, cfg: VideoChatFlashConfig, clips: jax.Array, clip_batch: int = 8) -> jax.Array:
    """ViT features of normalised clips (n_clips, L, H, W, 3) → (n_clips, L·grid², C).

    Clips are independent; `clip_batch` of them run at a time as one batch (bounds attention memory),
    split over the mesh by the ViT's `vision_batch` constraints.
    """
    vision, _ = _vision_modules(cfg)
    return chunked_map(lambda c: vision.apply({"params": params["vision"]}, c), clips, clip_batch)


def merge_and_project(params: dict, cfg: VideoChatFlashConfig, features: jax.Array, return_stages: bool = False):
    """ToMe to `tokens_per_frame`·L tokens per clip, then the MLP: (n_clips, N, C) → (n_clips·16L, D).

    With `return_stages`, also {'merge_assign': (n_clips, N) int32, 'merged': (n_clips, 16L, C)}.
    """
    _, projector = _vision_modules(cfg)
    target = cfg.tokens_per_frame * features.shape[1] // cfg.vision.tokens_per_frame
    merged, _, assign = merge_clips(features, cfg.vision.num_attention_heads, target, return_assign=True)
    out = projector.apply({"params": params["projector"]}, merged)
    out = out.reshape(-1, out.shape[-1])
    return (out, {"merge_assign": assign, "merged": merged}) if return_stages else out


def splice(params: dict, cfg: VideoChatFlashConfig, ids: jax.Array, visual: jax.Array, visual_start: int) -> jax.Array:
    """Token embeddings of ids (B, S) with the visual block (B, Nv, D) written at `visual_start`."""
    x = llm.embed(params["llm"], cfg.llm, ids)
    return jax.lax.dynamic_update_slice_in_dim(x, visual.astype(x.dtype), visual_start, axis=1)
