"""The pre-LayerNorm encoder layer of Hugging Face's CLIP and SigLIP vision towers (shared by both).

    x + self_attn(layer_norm1(x)), then x + mlp.fc2(act(mlp.fc1(layer_norm2(x))))

Parameters mirror `encoder.layers.{i}.*`: layer_norm{1,2}/{scale,bias}, self_attn/{q,k,v,out}_proj,
mlp/fc{1,2} (Flax kernels (in, out)). `act` is 'quick_gelu' (CLIP: x·σ(1.702x)) or 'gelu_tanh'
(SigLIP's `gelu_pytorch_tanh`). The towers scan it over a leading `layers` axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lvjax.attention import attend

P = nn.with_logical_partitioning
ACT = ("vision_batch", "vision_length", "activation_embed")  # a clip's tokens: never sequence-split
ACTIVATIONS = {"quick_gelu": lambda h: h * jax.nn.sigmoid(1.702 * h),
               "gelu_tanh": lambda h: nn.gelu(h, approximate=True)}


class ViTSizes:
    """What the ViT configs (frozen dataclasses with `image_size`, `patch_size`) derive alike."""

    @property
    def grid(self) -> int:
        """Patches per side of a frame (the VALID patch conv drops a remainder: 384 // 14 = 27)."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


def dense(features: int, axes: tuple, cfg: Any, name: str, kernel_init=nn.initializers.normal(0.02)) -> nn.Dense:
    """Linear with bias, logical axes `axes` on the kernel; cfg gives dtype / param_dtype."""
    return nn.Dense(features, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                    kernel_init=P(kernel_init, axes), bias_init=P(nn.initializers.zeros, axes[1:]), name=name)


def layer_norm(cfg: Any, name: str) -> nn.LayerNorm:
    """torch-exact LayerNorm (two-pass variance) with cfg.layer_norm_eps."""
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                        use_fast_variance=False, scale_init=P(nn.initializers.ones, ("norm",)),
                        bias_init=P(nn.initializers.zeros, ("norm",)), name=name)


class SelfAttention(nn.Module):
    """Full multi-head self-attention with q/k/v/out biases, scale head_dim^-½: (B, N, C) → (B, N, C)."""

    cfg: Any
    kernel_init: Any = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        b, n, c = x.shape
        h = cfg.num_attention_heads
        d = c // h
        q, k, v = (dense(c, ("vision_embed", "vision_heads"), cfg, f"{p}_proj", self.kernel_init)(x).reshape(b, n, h, d)
                   for p in "qkv")
        out = attend(q, k, v, None, scale=d**-0.5).reshape(b, n, c)
        return dense(c, ("vision_heads", "vision_embed"), cfg, "out_proj", self.kernel_init)(out)


class MLP(nn.Module):
    cfg: Any
    act: str
    kernel_init: Any = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        x = ACTIVATIONS[self.act](dense(cfg.intermediate_size, ("vision_embed", "vision_mlp"), cfg, "fc1", self.kernel_init)(x))
        return dense(cfg.hidden_size, ("vision_mlp", "vision_embed"), cfg, "fc2", self.kernel_init)(x)


class EncoderLayer(nn.Module):
    """One pre-LN layer; scan body (x, _) → (x, None). cfg needs hidden/intermediate sizes, heads, eps, dtypes."""

    cfg: Any
    act: str
    kernel_init: Any = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x, _=None):
        x = nn.with_logical_constraint(x, ACT)
        x = x + SelfAttention(self.cfg, self.kernel_init, name="self_attn")(layer_norm(self.cfg, "layer_norm1")(x))
        x = x + MLP(self.cfg, self.act, self.kernel_init, name="mlp")(layer_norm(self.cfg, "layer_norm2")(x))
        return x, None
