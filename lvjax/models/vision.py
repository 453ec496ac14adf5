"""UMT ViT (the VideoChat-Flash vision tower) as a functional Flax Linen module.

Input: normalised clips (B, L, H, W, 3) channels-last float; output (B, L·grid², C) after the
final `vision_layernorm`, tokens in (t, h, w) order. Attention is full inside one clip and
never crosses clips (each batch row is a clip). L == 1 uses the single-image positional table.

Parameter tree (names mirror the original `…encoder.*` modules; Flax kernels are (in, out);
the blocks are an `nn.scan`, so every block leaf has a leading `layers` axis of num_blocks):

    patch_embed/proj/kernel      (tubelet, p, p, 3, C)     patch_embed/proj/bias (C,)
    blocks/norm1/{scale,bias}    (N, C)
    blocks/attn/qkv/kernel       (N, C, 3C)   no bias param; bias = [q_bias, 0, v_bias]
    blocks/attn/{q_bias,v_bias}  (N, C)       only when cfg.qkv_bias
    blocks/attn/proj/{kernel (N, C, C), bias (N, C)}
    blocks/norm2/{scale,bias}    (N, C)
    blocks/mlp/fc1/{kernel (N, C, M), bias (N, M)}
    blocks/mlp/fc2/{kernel (N, M, C), bias (N, C)}
    vision_layernorm/{scale,bias} (C,)

N = cfg.num_blocks (23 for UMT-L with mm_vision_select_layer −2), M = C·mlp_ratio.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lvjax.attention import attend
from lvjax.config import VisionConfig
from lvjax.models.pos_embed import vision_pos_embed
from lvjax.models.stack import scanned

P = nn.with_logical_partitioning
ACT = ("activation_batch", "activation_length", "activation_embed")

def _dense(features: int, axes: tuple, cfg: VisionConfig, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=P(nn.initializers.xavier_uniform(), axes),
        bias_init=P(nn.initializers.zeros, axes[1:]),
        name=name,
    )


def _layer_norm(eps: float, cfg: VisionConfig, name: str) -> nn.LayerNorm:
    # Two-pass variance like torch (the fast E[x²]−E[x]² form loses precision).
    return nn.LayerNorm(
        epsilon=eps,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        use_fast_variance=False,
        scale_init=P(nn.initializers.ones, ("norm",)),
        bias_init=P(nn.initializers.zeros, ("norm",)),
        name=name,
    )


class Attention(nn.Module):
    """Fused-qkv multi-head self-attention with q and v biases (no k bias): (B, N, C) → (B, N, C)."""

    cfg: VisionConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        b, n, c = x.shape
        h = cfg.num_attention_heads
        d = c // h
        qkv = _dense(3 * c, ("embed", "heads"), cfg, "qkv", use_bias=False)(x)
        if cfg.qkv_bias:
            pd = jnp.dtype(cfg.param_dtype)
            q_bias = self.param("q_bias", P(nn.initializers.zeros, ("heads",)), (c,), pd)
            v_bias = self.param("v_bias", P(nn.initializers.zeros, ("heads",)), (c,), pd)
            bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(qkv.dtype)
            qkv = qkv + bias
        qkv = qkv.reshape(b, n, 3, h, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = attend(q, k, v, None, scale=d**-0.5, layout=_clip_layout(n)).reshape(b, n, c)
        return _dense(c, ("heads", "embed"), cfg, "proj")(out)


class Mlp(nn.Module):
    """fc1 → exact (erf) GELU → fc2."""

    cfg: VisionConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        hidden = int(cfg.hidden_size * cfg.mlp_ratio)
        x = _dense(hidden, ("embed", "mlp"), cfg, "fc1")(x)
        x = nn.gelu(x, approximate=False)
        return _dense(cfg.hidden_size, ("mlp", "embed"), cfg, "fc2")(x)


class Block(nn.Module):
    """Pre-LN block: x + attn(norm1(x)), then + mlp(norm2(x)). Scan body: (x, _) → (x, None)."""

    cfg: VisionConfig

    @nn.compact
    def __call__(self, x, _=None):
        cfg = self.cfg
        x = nn.with_logical_constraint(x, ACT)
        x = x + Attention(cfg, name="attn")(_layer_norm(cfg.layer_norm_eps, cfg, "norm1")(x))
        x = x + Mlp(cfg, name="mlp")(_layer_norm(cfg.layer_norm_eps, cfg, "norm2")(x))
        return x, None


class PatchEmbed(nn.Module):
    """Conv3d with kernel = stride = (tubelet, p, p) as `proj`: (B, L, H, W, 3) → (B, L', g, g, C)."""

    cfg: VisionConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        p, ts = cfg.patch_size, cfg.tubelet_size
        return nn.Conv(
            cfg.hidden_size,
            kernel_size=(ts, p, p),
            strides=(ts, p, p),
            padding="VALID",
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            kernel_init=P(nn.initializers.lecun_normal(), (None, None, None, None, "embed")),
            bias_init=P(nn.initializers.zeros, ("embed",)),
            name="proj",
        )(x)


class UMTVisionTower(nn.Module):
    """The UMT ViT encoder. `__call__(clips)`: (B, L, H, W, 3) → (B, L·grid², C) in cfg.dtype.

    Only `cfg.num_blocks` blocks exist. `remat_policy` ('none', 'full', 'dots', 'minimal')
    rematerialises each block in training.
    """

    cfg: VisionConfig
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, clips):
        cfg = self.cfg
        dtype = jnp.dtype(cfg.dtype)
        b, t, hgt, wid, _ = clips.shape
        if hgt != cfg.image_size or wid != cfg.image_size:
            raise ValueError(f"UMTVisionTower: frames are {hgt}×{wid}, the config expects {cfg.image_size}²")
        if t % cfg.tubelet_size:
            raise ValueError(f"UMTVisionTower: clip length {t} is not a multiple of tubelet_size {cfg.tubelet_size}")
        x = PatchEmbed(cfg, name="patch_embed")(clips.astype(dtype))
        x = x.reshape(b, -1, cfg.hidden_size)  # (t, h, w) order
        pos = vision_pos_embed(cfg, num_frames=t // cfg.tubelet_size)
        x = x + jnp.asarray(pos, dtype)[None]
        x = nn.with_logical_constraint(x, ACT)

        blocks = scanned(Block, cfg.num_blocks, self.remat_policy)(cfg, name="blocks")
        x, _ = blocks(x, None)
        x = _layer_norm(cfg.final_layer_norm_eps, cfg, "vision_layernorm")(x)
        return nn.with_logical_constraint(x, ACT)


def vision_apply(params, cfg: VisionConfig, clips: jax.Array) -> jax.Array:
    """Pure forward: params (the module's 'params' tree) and clips (B, L, H, W, 3) → (B, L·grid², C)."""
    return UMTVisionTower(cfg).apply({"params": params}, clips)


def init_vision(cfg: VisionConfig, key: jax.Array, num_frames: int | None = None) -> dict:
    """Random (boxed, logically partitioned) params for a clip of `num_frames` (cfg.num_frames)."""
    t = cfg.num_frames if num_frames is None else num_frames
    clip = jnp.zeros((1, t, cfg.image_size, cfg.image_size, 3), jnp.float32)
    return UMTVisionTower(cfg).init(key, clip)["params"]


def _clip_layout(n: int):
    """Full attention within a clip as a block-sparse layout on GPU/TPU (flash-style, no n×n scores);
    None elsewhere (the dense path)."""
    if jax.default_backend() not in ("gpu", "tpu"):
        return None
    from kernels_pallas.block_sparse.layout import full

    return full(n)
