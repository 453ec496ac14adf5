"""SigLIP vision tower (`transformers.SiglipVisionModel`) as used by Video-XL-Pro / Video-XL-2.

The originals load `google/siglip-so400m-patch14-384`, delete its last encoder layer and replace
the attention-pool head by Identity; the feature is `hidden_states[-1]`, i.e. the output of the
last *kept* layer, **before** `post_layernorm`, all grid² patches (no CLS). So only
`num_hidden_layers - 1` layers exist here; `post_layernorm` is kept as a parameter (the
checkpoint stores it and export writes it back) but the forward does not use it.

Input: normalised frames (N, image, image, 3) channels-last; output (N, grid², C).

Parameter tree (names mirror `vision_model.*`; Flax kernels are (in, out); the layers are an
`nn.scan`, so every layer leaf has a leading `layers` axis of `num_layers`):

    embeddings/patch_embedding/{kernel (p, p, 3, C), bias (C,)}
    embeddings/position_embedding/embedding                    (grid², C)
    layers/layer_norm{1,2}/{scale, bias}                       (N, C)
    layers/self_attn/{q,k,v,out}_proj/{kernel (N, C, C), bias (N, C)}
    layers/mlp/fc1/{kernel (N, C, M), bias (N, M)}, mlp/fc2/{kernel (N, M, C), bias (N, C)}
    post_layernorm/{scale, bias}                               (C,)  stored, unused
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from lvjax.config import ConfigError
from lvjax.models.stack import scanned
from lvjax.models.vit_layer import ACT, EncoderLayer, P, ViTSizes, layer_norm

# Fields of a SigLIP `vision_tower/config.json` this port reads (and writes back).
_FIELDS = ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_hidden_layers",
           "num_attention_heads", "layer_norm_eps", "num_channels")


@dataclasses.dataclass(frozen=True)
class SiglipConfig(ViTSizes):
    """SigLIP sizes as in the folder's config (`num_hidden_layers` counts the deleted layer too)."""

    image_size: int = 384
    patch_size: int = 14
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    layer_norm_eps: float = 1e-6
    num_channels: int = 3
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def num_layers(self) -> int:
        """Layers actually built (the original deletes the last one)."""
        return self.num_hidden_layers - 1

    @classmethod
    def from_hf(cls, hf: dict, source: str) -> "SiglipConfig":
        """From a `SiglipVisionModel` config dict; `source` (the file) names errors."""
        missing = [k for k in _FIELDS[:6] if k not in hf]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        act = hf.get("hidden_act", "gelu_pytorch_tanh")
        if act != "gelu_pytorch_tanh":
            raise ConfigError(f"{source}: hidden_act={act!r} is not supported (SigLIP uses 'gelu_pytorch_tanh')")
        kw = {k: hf[k] for k in _FIELDS if k in hf}
        for k in _FIELDS:
            if k in kw and (isinstance(kw[k], bool) or not isinstance(kw[k], (int, float)) or kw[k] <= 0):
                raise ConfigError(f"{source}: {k}={kw[k]!r} must be a positive number")
        cfg = cls(**kw)
        if cfg.num_hidden_layers < 2:
            raise ConfigError(f"{source}: num_hidden_layers={cfg.num_hidden_layers} leaves no layer after the "
                              "original deletes the last one")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ConfigError(f"{source}: hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads "
                              f"{cfg.num_attention_heads}")
        return cfg

    def to_hf(self) -> dict:
        """A `SiglipVisionModel` config.json dict (`num_hidden_layers` includes the deleted layer)."""
        return {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model",
                "hidden_act": "gelu_pytorch_tanh", "attention_dropout": 0.0,
                **{k: getattr(self, k) for k in _FIELDS}}


class SiglipVisionModel(nn.Module):
    """Frames (N, S, S, 3) → patch features (N, grid², C) before `post_layernorm` (see the module doc)."""

    cfg: SiglipConfig
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, pixels):
        cfg = self.cfg
        dtype = jnp.dtype(cfg.dtype)
        _, hgt, wid, _ = pixels.shape
        if hgt != cfg.image_size or wid != cfg.image_size:
            raise ValueError(f"SiglipVisionModel: frames are {hgt}×{wid}, the config expects {cfg.image_size}²")
        x = _Embeddings(cfg, name="embeddings")(pixels.astype(dtype))
        x, _ = scanned(EncoderLayer, cfg.num_layers, self.remat_policy)(
            cfg, "gelu_tanh", nn.initializers.xavier_uniform(), name="layers")(x, None)
        if self.is_initializing():  # the stored post_layernorm exists for export only; the feature is before it
            layer_norm(cfg, "post_layernorm")(x[:1, :1])
        return nn.with_logical_constraint(x, ACT)


class _Embeddings(nn.Module):
    """Conv2d patch embedding (kernel = stride = patch, no padding) + learned position table."""

    cfg: SiglipConfig

    @nn.compact
    def __call__(self, pixels):
        cfg = self.cfg
        p = cfg.patch_size
        x = nn.Conv(cfg.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=jnp.dtype(cfg.dtype),
                    param_dtype=jnp.dtype(cfg.param_dtype),
                    kernel_init=P(nn.initializers.lecun_normal(), (None, None, None, "vision_embed")),
                    bias_init=P(nn.initializers.zeros, ("vision_embed",)), name="patch_embedding")(pixels)
        x = x.reshape(x.shape[0], -1, cfg.hidden_size)  # row-major patches
        pos = nn.Embed(cfg.tokens_per_frame, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype),
                       param_dtype=jnp.dtype(cfg.param_dtype),
                       embedding_init=P(nn.initializers.normal(0.02), (None, "vision_embed")), name="position_embedding")
        return x + pos(jnp.arange(cfg.tokens_per_frame))[None]


def siglip_apply(params, cfg: SiglipConfig, pixels: jax.Array) -> jax.Array:
    """Pure forward: params and frames (N, S, S, 3) → (N, grid², C)."""
    return SiglipVisionModel(cfg).apply({"params": params}, pixels)


def init_siglip(cfg: SiglipConfig, key: jax.Array) -> dict:
    """Random (boxed, logically partitioned) params."""
    return SiglipVisionModel(cfg).init(key, jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32))["params"]
