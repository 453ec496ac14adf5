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

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels_pallas.block_sparse.layout import full
from lvjax.attention import attend
from lvjax.config import ConfigError
from lvjax.models.pos_embed import vision_pos_embed
from lvjax.models.stack import scanned
from lvjax.models.vit_layer import ViTSizes

# The real UMT-L sizes; a `vision_tower_config` dict in config.json overrides them (tiny models).
_UMT_LARGE = dict(
    patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4.0,
    ckpt_num_frame=4, tubelet_size=1, return_idx=-2, layer_norm_eps=1e-6, final_layer_norm_eps=1e-12,
    qkv_bias=True,
)


@dataclasses.dataclass(frozen=True)
class UMTConfig(ViTSizes):
    """UMT ViT sizes. `num_frames` is the clip length L (`mm_local_num_frames`).

    Only `num_hidden_layers + return_idx + 1` blocks are built (23 of 24 for UMT-L).
    """

    image_size: int = 448
    patch_size: int = 16
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    mlp_ratio: float = 4.0
    ckpt_num_frame: int = 4
    tubelet_size: int = 1
    return_idx: int = -2
    layer_norm_eps: float = 1e-6
    final_layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    num_frames: int = 4
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def num_blocks(self) -> int:
        """Blocks actually instantiated (the output is taken after the last of them)."""
        return self.num_hidden_layers + self.return_idx + 1

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "UMTConfig":
        """From a VideoChat-Flash config dict (`mm_vision_tower`, optional `vision_tower_config`)."""
        tower = hf.get("mm_vision_tower")
        if not isinstance(tower, str) or not tower.startswith("umt"):
            raise ConfigError(
                f"{source}: mm_vision_tower={tower!r} is not supported (expected a UMT tower such as 'umt-hd-large')"
            )
        fields = dict(_UMT_LARGE, image_size=448 if tower.startswith("umt-hd") else 224)
        override = hf.get("vision_tower_config") or {}
        unknown = set(override) - set(fields) - {"image_size"}
        if unknown:
            raise ConfigError(f"{source}: vision_tower_config has unknown field(s) {sorted(unknown)}")
        fields.update(override)
        if "mm_vision_select_layer" in hf:
            fields["return_idx"] = int(hf["mm_vision_select_layer"])
        fields["num_frames"] = int(hf.get("mm_local_num_frames", 4))
        cfg = cls(**fields)
        if cfg.image_size % cfg.patch_size:
            raise ConfigError(f"{source}: image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        if not 0 < cfg.num_blocks <= cfg.num_hidden_layers:
            raise ConfigError(f"{source}: mm_vision_select_layer={cfg.return_idx} selects no ViT block")
        return cfg

    def to_hf_override(self) -> dict:
        """The `vision_tower_config` dict written back on export."""
        return {k: getattr(self, k) for k in ("image_size", *_UMT_LARGE)}


P = nn.with_logical_partitioning
ACT = ("vision_batch", "vision_length", "activation_embed")  # a clip's tokens: never sequence-split

def _dense(features: int, axes: tuple, cfg: UMTConfig, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=P(nn.initializers.xavier_uniform(), axes),
        bias_init=P(nn.initializers.zeros, axes[1:]),
        name=name,
    )


def _layer_norm(eps: float, cfg: UMTConfig, name: str) -> nn.LayerNorm:
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

    cfg: UMTConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        b, n, c = x.shape
        h = cfg.num_attention_heads
        d = c // h
        qkv = _dense(3 * c, ("vision_embed", "vision_heads"), cfg, "qkv", use_bias=False)(x)
        if cfg.qkv_bias:
            pd = jnp.dtype(cfg.param_dtype)
            q_bias = self.param("q_bias", P(nn.initializers.zeros, ("vision_heads",)), (c,), pd)
            v_bias = self.param("v_bias", P(nn.initializers.zeros, ("vision_heads",)), (c,), pd)
            bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(qkv.dtype)
            qkv = qkv + bias
        qkv = qkv.reshape(b, n, 3, h, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = attend(q, k, v, None, scale=d**-0.5, layout=_clip_layout(n)).reshape(b, n, c)
        return _dense(c, ("vision_heads", "vision_embed"), cfg, "proj")(out)


class Mlp(nn.Module):
    """fc1 → exact (erf) GELU → fc2."""

    cfg: UMTConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        hidden = int(cfg.hidden_size * cfg.mlp_ratio)
        x = _dense(hidden, ("vision_embed", "vision_mlp"), cfg, "fc1")(x)
        x = nn.gelu(x, approximate=False)
        return _dense(cfg.hidden_size, ("vision_mlp", "vision_embed"), cfg, "fc2")(x)


class Block(nn.Module):
    """Pre-LN block: x + attn(norm1(x)), then + mlp(norm2(x)). Scan body: (x, _) → (x, None)."""

    cfg: UMTConfig

    @nn.compact
    def __call__(self, x, _=None):
        cfg = self.cfg
        x = nn.with_logical_constraint(x, ACT)
        x = x + Attention(cfg, name="attn")(_layer_norm(cfg.layer_norm_eps, cfg, "norm1")(x))
        x = x + Mlp(cfg, name="mlp")(_layer_norm(cfg.layer_norm_eps, cfg, "norm2")(x))
        return x, None


class PatchEmbed(nn.Module):
    """Conv3d with kernel = stride = (tubelet, p, p) as `proj`: (B, L, H, W, 3) → (B, L', g, g, C)."""

    cfg: UMTConfig

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
            kernel_init=P(nn.initializers.lecun_normal(), (None, None, None, None, "vision_embed")),
            bias_init=P(nn.initializers.zeros, ("vision_embed",)),
            name="proj",
        )(x)


class UMTVisionTower(nn.Module):
    """The UMT ViT encoder. `__call__(clips)`: (B, L, H, W, 3) → (B, L·grid², C) in cfg.dtype.

    Only `cfg.num_blocks` blocks exist. `remat_policy` ('none', 'full', 'dots', 'minimal')
    rematerialises each block in training.
    """

    cfg: UMTConfig
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


def vision_apply(params, cfg: UMTConfig, clips: jax.Array) -> jax.Array:
    """Pure forward: params (the module's 'params' tree) and clips (B, L, H, W, 3) → (B, L·grid², C)."""
    return UMTVisionTower(cfg).apply({"params": params}, clips)


def init_vision(cfg: UMTConfig, key: jax.Array, num_frames: int | None = None) -> dict:
    """Random (boxed, logically partitioned) params for a clip of `num_frames` (cfg.num_frames)."""
    t = cfg.num_frames if num_frames is None else num_frames
    clip = jnp.zeros((1, t, cfg.image_size, cfg.image_size, 3), jnp.float32)
    return UMTVisionTower(cfg).init(key, clip)["params"]


def _clip_layout(n: int):
    """Full attention within a clip as a block-sparse layout on GPU/TPU (flash-style, no n×n scores);
    None elsewhere (the dense path)."""
    if jax.default_backend() not in ("gpu", "tpu"):
        return None

    return full(n)
