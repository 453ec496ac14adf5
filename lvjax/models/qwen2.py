"""Qwen2 / Qwen2.5 decoder as functional Flax Linen modules.

Parameter tree (names mirror the Hugging Face modules; Flax `kernel` is (in, out)):

    embed_tokens/embedding               (V, D)
    layers/self_attn/{q,k,v}_proj/{kernel,bias}, o_proj/kernel      stacked (L, ...)
    layers/mlp/{gate,up,down}_proj/kernel                           stacked (L, ...)
    layers/{input,post_attention}_layernorm/scale                   stacked (L, D)
    norm/scale                           (D,)
    lm_head/kernel                       (D, V)   only when embeddings are untied

The layer stack is an `nn.scan` over one `DecoderLayer` (optionally `nn.remat`-ed), so any
contiguous slice of the stacked parameters can be run by a stack of that length — this is
how a `CompressionPlan` runs the layers between two token drops (see models/llm.py).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvjax.attention import attend, attend_cached
from lvjax.config import LLMConfig
from lvjax.models.stack import scanned

P = nn.with_logical_partitioning
ACT = ("activation_batch", "activation_length", "activation_embed")
# Inside attention (B, T, H, hd): queries keep the hidden states' length split, keys / values are
# whole on every device (`activation_kv_length` is replicated: GSPMD all-gathers them over
# `sequence`). Heads and head_dim stay as the projections left them (Hkv may be < the tensor axis).
_FREE = jax.sharding.PartitionSpec.UNCONSTRAINED
Q_AXES = ("activation_batch", "activation_length", _FREE, _FREE)
KV_AXES = ("activation_batch", "activation_kv_length", _FREE, _FREE)


def _dtype(name: str):
    return jnp.dtype(name)


# --------------------------------------------------------------------------- rotary embeddings


def rope_inv_freq(cfg: LLMConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies (head_dim/2,) float32 and the cos/sin scale, as transformers computes them.

    Plain RoPE: θ^(−2i/d). YaRN (`rope_scaling.type == 'yarn'`): the NTK-by-parts blend of
    interpolated and extrapolated frequencies and the attention factor 0.1·ln(s)+1.
    """
    dim = cfg.head_dim
    base = np.float32(cfg.rope_theta)
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    scaling = cfg.rope_scaling_dict
    if scaling is None:
        return (np.float32(1.0) / pos_freqs).astype(np.float32), 1.0

    factor = scaling.get("factor")
    orig_max = scaling.get("original_max_position_embeddings") or cfg.max_position_embeddings
    if factor is None:
        factor = cfg.max_position_embeddings / orig_max

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attn_factor = scaling.get("attention_factor")
    if attn_factor is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attn_factor = float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1

    def correction_dim(rotations):
        return (dim * math.log(orig_max / (rotations * 2 * math.pi))) / (2 * math.log(cfg.rope_theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    extrapolation = np.float32(1) - ramp
    inv_extra = np.float32(1.0) / pos_freqs
    inv_inter = np.float32(1.0) / (np.float32(factor) * pos_freqs)
    inv_freq = inv_inter * (1 - extrapolation) + inv_extra * extrapolation
    return inv_freq.astype(np.float32), float(attn_factor)


def rope_cos_sin(positions: jax.Array, cfg: LLMConfig) -> tuple[jax.Array, jax.Array]:
    """positions (B, T) int → cos, sin (B, T, head_dim) float32 (rotate-half layout)."""
    inv_freq, scale = rope_inv_freq(cfg)
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb) * scale, jnp.sin(emb) * scale


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x (B, T, H, D) rotated by cos/sin (B, T, D) in the rotate-half convention."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def scoring_projection(layer_params: dict, cfg: LLMConfig, h, name: str, heads: int, positions):
    """A layer's rotated q or k (`name` = "q_proj"/"k_proj") of already normed h (..., T, D) at
    `positions` (..., T) → (..., T, heads, head_dim); used to read attention weights for scoring."""
    p = layer_params["self_attn"][name]
    y = h @ p["kernel"].astype(h.dtype) + p["bias"].astype(h.dtype)
    y = y.reshape(h.shape[:-1] + (heads, cfg.head_dim))
    cos, sin = rope_cos_sin(positions, cfg)
    return apply_rope(y, cos, sin)


# --------------------------------------------------------------------------- modules


class RMSNorm(nn.Module):
    """x / rms(x) · scale, computed in fp32 and cast back (as transformers)."""

    eps: float
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", P(nn.initializers.ones, ("norm",)), (x.shape[-1],), _dtype(self.param_dtype))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(_dtype(self.dtype)) * y.astype(_dtype(self.dtype))


def _dense(features, axes, cfg: LLMConfig, bias: bool, name: str | None):
    return nn.Dense(
        features,
        use_bias=bias,
        dtype=_dtype(cfg.dtype),
        param_dtype=_dtype(cfg.param_dtype),
        kernel_init=P(nn.initializers.normal(0.02), axes),
        bias_init=P(nn.initializers.zeros, axes[1:]),
        name=name,
    )


class Attention(nn.Module):
    """Grouped-query self-attention with q/k/v biases and a bias-free o_proj.

    With `cache=(k, v)` (each (B, Hkv, S, D)) and `mask=(cache_mask (B, T, S), new_mask
    (B, T, T))` the tokens attend to the cache as it was and to themselves (`attend_cached`),
    then their keys/values are written at slot `cache_index`; otherwise attention runs over the
    input itself. Returns (output (B, T, D), (k, v) — the updated cache, or this input's
    keys/values (B, T, Hkv, D)). Under a `sequence` mesh axis the queries stay split on length and
    k / v are all-gathered (`Q_AXES`, `KV_AXES`), so each device attends its own query rows.
    With a static block-sparse `layout` (self-attention only) it replaces `mask`.

    Extension point (Video-XL's visual summarization tokens): `beacon` names the projections
    among "q", "k", "v" that have a second set of weights `beacon_{q,k,v}_proj`; `project`
    uses them for the rows it is told to. With `beacon=()` (the default) no such parameter exists.
    """

    cfg: LLMConfig
    layout: Any = None
    beacon: tuple[str, ...] = ()

    def setup(self):
        cfg = self.cfg
        hq, hkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = _dense(hq * hd, ("embed", "heads"), cfg, True, None)
        self.k_proj = _dense(hkv * hd, ("embed", "kv_heads"), cfg, True, None)
        self.v_proj = _dense(hkv * hd, ("embed", "kv_heads"), cfg, True, None)
        self.o_proj = _dense(cfg.hidden_size, ("heads", "embed"), cfg, False, None)
        if "q" in self.beacon:
            self.beacon_q_proj = _dense(hq * hd, ("embed", "heads"), cfg, True, None)
        if "k" in self.beacon:
            self.beacon_k_proj = _dense(hkv * hd, ("embed", "kv_heads"), cfg, True, None)
        if "v" in self.beacon:
            self.beacon_v_proj = _dense(hkv * hd, ("embed", "kv_heads"), cfg, True, None)

    def project(self, x, beacon_rows=None):
        """x (B, T, D) → q (B, T, Hq, hd), k, v (B, T, Hkv, hd), before RoPE.

        beacon_rows (B, n) int: the rows projected with the `beacon_*` weights instead (an index
        ≥ T is no row, so a padded list is fine). Only those n rows go through the beacon weights.
        """
        b, t, _ = x.shape
        cfg = self.cfg
        out = {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}
        if beacon_rows is not None and self.beacon:
            xb = jnp.take_along_axis(x, jnp.minimum(beacon_rows, t - 1)[..., None], axis=1)
            batch = jnp.arange(b)[:, None]
            for name in self.beacon:
                yb = getattr(self, f"beacon_{name}_proj")(xb)
                out[name] = out[name].at[batch, beacon_rows].set(yb.astype(out[name].dtype), mode="drop")
        heads = {"q": cfg.num_attention_heads, "k": cfg.num_key_value_heads, "v": cfg.num_key_value_heads}
        return tuple(out[n].reshape(b, t, heads[n], cfg.head_dim) for n in ("q", "k", "v"))

    def __call__(self, x, cos, sin, mask, cache=None, cache_index=None):
        cfg = self.cfg
        b, t, _ = x.shape
        q, k, v = self.project(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = nn.with_logical_constraint(q, Q_AXES)
        k, v = (nn.with_logical_constraint(a, KV_AXES) for a in (k, v))
        if cache is not None:
            cache_mask, new_mask = mask
            out = attend_cached(q, k, v, cache[0], cache[1], cache_mask, new_mask)
            k, v = (jax.lax.dynamic_update_slice_in_dim(c, a.astype(c.dtype).transpose(0, 2, 1, 3), cache_index, axis=2)
                    for c, a in ((cache[0], k), (cache[1], v)))
        elif self.layout is not None:
            out = attend(q, k, v, impl=cfg.attention_impl, layout=self.layout)
        else:
            out = attend(q, k, v, mask)  # dense: rows padded in different places
        out = self.o_proj(out.reshape(b, t, cfg.num_attention_heads * cfg.head_dim))
        return out, (k, v)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) · up(x))."""

    cfg: LLMConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        gate = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, False, "gate_proj")(x)
        up = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, False, "up_proj")(x)
        return _dense(cfg.hidden_size, ("mlp", "embed"), cfg, False, "down_proj")(nn.silu(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-RMSNorm attention and MLP with residuals. Scan body: (x, cache) → (x, kv)."""

    cfg: LLMConfig
    layout: Any = None

    @nn.compact
    def __call__(self, x, cache, cos, sin, mask, cache_index):
        cfg = self.cfg
        x = nn.with_logical_constraint(x, ACT)
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype, name=name)  # noqa: E731
        h, kv = Attention(cfg, self.layout, name="self_attn")(norm("input_layernorm")(x), cos, sin, mask, cache, cache_index)
        x = x + h
        x = x + MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
        return x, kv


def decoder_stack(cfg: LLMConfig, length: int, name: str | None = None, layout=None) -> nn.Module:
    """An `nn.scan` over `length` decoder layers; params stacked on a leading `layers` axis.

    Call as stack(x, caches, cos, sin, mask, cache_index) → (x, kv) where caches/kv are
    (k, v) pairs stacked over layers (or None). A static `layout` sends self-attention to the
    block-sparse kernels (see `llm.prefill`).
    """
    in_axes = (0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast)
    return scanned(DecoderLayer, length, cfg.remat_policy, in_axes)(cfg, layout, name=name)


class Qwen2(nn.Module):
    """The Qwen2 causal LM. `__call__(ids)` is the plain uncompressed forward → logits.

    The pieces (`embed`, `layers`, `head`) are methods so models/llm.py can run the layer
    stack stage by stage.
    """

    cfg: LLMConfig

    def setup(self):
        cfg = self.cfg
        self.embed_tokens = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=_dtype(cfg.dtype),
            param_dtype=_dtype(cfg.param_dtype),
            embedding_init=P(nn.initializers.normal(0.02), ("vocab", "embed")),
        )
        self.layers = decoder_stack(cfg, cfg.num_hidden_layers)
        self.norm = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = _dense(cfg.vocab_size, ("embed", "vocab"), cfg, False, None)

    def embed(self, ids):
        """ids (B, T) → (B, T, D)."""
        return self.embed_tokens(ids)

    def head(self, x):
        """Final norm and LM head: (B, T, D) → fp32 logits (B, T, V)."""
        x = self.norm(x)
        if self.cfg.tie_word_embeddings:
            logits = self.embed_tokens.attend(x)
        else:
            logits = self.lm_head(x)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("activation_batch", "activation_length", "vocab"))

    def __call__(self, ids, valid=None):
        """ids (B, T), valid (B, T) bool (False = padding, anywhere) → logits (B, T, V)."""
        if valid is None:
            valid = jnp.ones(ids.shape, bool)
        positions = positions_from_valid(valid)
        cos, sin = rope_cos_sin(positions, self.cfg)
        x, _ = self.layers(self.embed(ids), None, cos, sin, causal_mask(valid), None)
        return self.head(x)


def positions_from_valid(valid: jax.Array) -> jax.Array:
    """RoPE positions that skip padding slots: cumsum(valid) − 1, clipped at 0. (B, T) int32."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)


def causal_mask(valid: jax.Array) -> jax.Array:
    """(B, T) valid → (B, T, T) bool: query i sees valid keys j ≤ i."""
    t = valid.shape[-1]
    return jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]
