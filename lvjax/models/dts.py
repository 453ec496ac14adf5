"""DTS (`SiglipAE` encoder of Video-XL-Pro's ReCoT): 4 frames of ViT features → 1 "pseudo-video" frame.

Input / output channels-last: (G, T, H, W, C) → (G, T/4, H, W, C) (the original is channel-first
(G, C, T, H, W)). The stack, as `SiglipAE.encoder`:

    x + temporal_encoding[t]                      (T=4, C) added per time step
    encoder_0  AttnBlock3D        spatial self-attention over H·W per (group, t), 1 head, scale C^-½
    encoder_1  TemporalAttention  attention over T per (group, h, w), 1 head, relative positions
    encoder_2  SamePadConv3d      replicate pad, Conv3d k3, stride (2,1,1): T 4 → 2
    encoder_3  AttnBlock3D
    encoder_4  TemporalAttention
    encoder_5  SamePadConv3d      T 2 → 1

GroupNorm: 32 groups, eps 1e-6. AttnBlock3D normalises over (T, H, W, C/32) per group sample;
TemporalAttention normalises the rearranged `(b h w) c t` tensor, i.e. over (T, C/32) per
spatial location — as the original. Parameter tree (mirrors `sae.*`; 1×1 convolutions are
Dense kernels (in, out)):

    temporal_encoding                                                  (4, C)
    encoder_{0,3}/{norm/{scale,bias}, q, k, v, proj_out}/{kernel (C, C), bias}
    encoder_{1,4}/{norm, qkv (C, 3C), proj_out (C, C)}, relative_position_{k,v}/embeddings_table (129, C)
    encoder_{2,5}/conv/{kernel (3, 3, 3, C, C), bias}
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lvjax.attention import attend

P = nn.with_logical_partitioning
MAX_RELATIVE_POSITION = 64  # TemporalAttention's table has 2·64 + 1 rows


def _norm(name: str, dtype, param_dtype) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, epsilon=1e-6, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype,
                        scale_init=P(nn.initializers.ones, ("norm",)), bias_init=P(nn.initializers.zeros, ("norm",)),
                        name=name)


def dense(features: int, name: str, dtype, param_dtype, zero: bool = False) -> nn.Dense:
    """A Dense (torch Linear) with logical axes (vision_embed, vision_mlp); zero-initialised when `zero`."""
    init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
    return nn.Dense(features, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                    kernel_init=P(init, ("vision_embed", "vision_mlp")), bias_init=P(nn.initializers.zeros, ("vision_mlp",)), name=name)


class AttnBlock3D(nn.Module):
    """x + proj_out(softmax(q kᵀ · C^-½) v) over the H·W positions of each (group, t)."""

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        g, t, h, w, c = x.shape
        dt, pdt = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        y = _norm("norm", dt, pdt)(x)
        q, k, v = (dense(c, n, dt, pdt)(y).reshape(g * t, h * w, 1, c) for n in "qkv")
        out = attend(q, k, v, None, scale=c**-0.5).reshape(g, t, h, w, c)
        return x + dense(c, "proj_out", dt, pdt)(out)


class RelativePosition(nn.Module):
    """`embeddings_table[clip(j − i, ±64) + 64]` for query i, key j: (T, T, C)."""

    channels: int
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, length: int):
        table = self.param("embeddings_table", P(nn.initializers.xavier_uniform(), (None, "vision_embed")),
                           (2 * MAX_RELATIVE_POSITION + 1, self.channels), jnp.dtype(self.param_dtype))
        r = jnp.arange(length)
        return table[jnp.clip(r[None, :] - r[:, None], -MAX_RELATIVE_POSITION, MAX_RELATIVE_POSITION)
                     + MAX_RELATIVE_POSITION]


class TemporalAttention(nn.Module):
    """x + proj_out(attention over T) per (group, h, w); one head, q and k scaled by C^-¼.

    With Tk, Tv the relative tables (`RelativePosition`, [i, j] = table[j − i]):
        logits[t, s] = q_t·k_s + q_s·Tk[s, t]   (the original adds its key term transposed)
        out[t]       = Σ_s p[t, s] (v_s + Tv[t, s]),   p = softmax_s(logits) in float32.
    qkv and proj_out are zero-initialised as in the original (the block starts as the identity).
    """

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        g, t, h, w, c = x.shape
        dt, pdt = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        seq = x.transpose(0, 2, 3, 1, 4).reshape(g * h * w, t, c)  # (b h w) t c
        qkv = dense(3 * c, "qkv", dt, pdt, zero=True)(_norm("norm", dt, pdt)(seq))
        scale = c**-0.25
        q, k, v = qkv[..., :c] * scale, qkv[..., c:2 * c] * scale, qkv[..., 2 * c:]
        k_rp = RelativePosition(c, self.param_dtype, name="relative_position_k")(t).astype(dt)
        v_rp = RelativePosition(c, self.param_dtype, name="relative_position_v")(t).astype(dt)
        logits = jnp.einsum("btc,bsc->bts", q, k) + jnp.einsum("bsc,stc->bts", q, k_rp)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dt)
        out = jnp.einsum("bts,bsc->btc", probs, v) + jnp.einsum("bts,tsc->btc", probs, v_rp)
        out = dense(c, "proj_out", dt, pdt, zero=True)(out)
        return x + out.reshape(g, h, w, t, c).transpose(0, 3, 1, 2, 4)


class SamePadConv3d(nn.Module):
    """Replicate-pad by (k − s) per axis (front gets the odd one), then a VALID Conv3d (`conv`)."""

    channels: int
    kernel: tuple[int, int, int] = (3, 3, 3)
    stride: tuple[int, int, int] = (2, 1, 1)
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        pads = [((k - s) // 2 + (k - s) % 2, (k - s) // 2) for k, s in zip(self.kernel, self.stride)]
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode="edge")
        return nn.Conv(self.channels, self.kernel, strides=self.stride, padding="VALID", dtype=jnp.dtype(self.dtype),
                       param_dtype=jnp.dtype(self.param_dtype),
                       kernel_init=P(nn.initializers.lecun_normal(), (None, None, None, "vision_embed", "vision_mlp")),
                       bias_init=P(nn.initializers.zeros, ("vision_mlp",)), name="conv")(x)


class SiglipAE(nn.Module):
    """The DTS encoder: (G, 4, H, W, C) → (G, 1, H, W, C). `return_layers` also gives each layer's output."""

    channels: int
    frames: int = 4
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x, return_layers: bool = False):
        c, dt, pdt = self.channels, self.dtype, self.param_dtype
        enc = self.param("temporal_encoding", P(nn.initializers.normal(1.0), (None, "vision_embed")), (self.frames, c),
                         jnp.dtype(pdt))
        x = x + enc.astype(x.dtype)[None, :, None, None, :]
        layers = [AttnBlock3D(dt, pdt, name="encoder_0"), TemporalAttention(dt, pdt, name="encoder_1"),
                  SamePadConv3d(c, dtype=dt, param_dtype=pdt, name="encoder_2"),
                  AttnBlock3D(dt, pdt, name="encoder_3"), TemporalAttention(dt, pdt, name="encoder_4"),
                  SamePadConv3d(c, dtype=dt, param_dtype=pdt, name="encoder_5")]
        outs = []
        for layer in layers:
            x = layer(x)
            outs.append(x)
        return (x, outs) if return_layers else x
