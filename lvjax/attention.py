"""The one attention entry point of lvjax.

`attend(q, k, v, mask=...)` computes softmax(q·kᵀ·scale + mask)·v with grouped-query heads,
fp32 softmax and no repeated K/V. Shapes: q (B, T, Hq, D), k and v (B, S, Hkv, D),
mask boolean broadcastable to (B, T, S) (True = may attend). Rows with no allowed key give 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def _grouped_logits(q, k, scale):
    """q (B,T,Hq,D), k (B,S,Hkv,D) → fp32 logits (B, Hkv, G, T, S)."""
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, hq // hkv, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    return logits * scale


def _broadcast_mask(mask, b, t, s):
    if mask is None:
        return None
    mask = jnp.asarray(mask, bool)
    while mask.ndim < 3:
        mask = mask[None]
    return jnp.broadcast_to(mask, (b, t, s))[:, None, None]  # (B,1,1,T,S)


def attention_probs(q, k, mask=None, *, scale: float | None = None):
    """Softmax attention probabilities in fp32, (B, Hq, T, S); fully masked rows are 0."""
    b, t, hq, d = q.shape
    s = k.shape[1]
    scale = d**-0.5 if scale is None else scale
    logits = _grouped_logits(q, k, scale)
    m = _broadcast_mask(mask, b, t, s)
    if m is not None:
        logits = jnp.where(m, logits, _NEG)
    probs = jax.nn.softmax(logits, axis=-1)
    if m is not None:
        probs = jnp.where(m, probs, 0.0)
    return probs.reshape(b, hq, t, s)


def attend(q, k, v, mask=None, *, scale: float | None = None, impl: str = "auto"):
    """Masked multi-head attention with GQA. Returns (B, T, Hq, D) in q's dtype.

    `impl` selects the implementation: "auto"/"xla" is the dense XLA reference.
    """
    if impl not in ("auto", "xla"):
        raise ValueError(f"unknown attention impl {impl!r}")
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    probs = attention_probs(q, k, mask, scale=scale).reshape(b, hkv, hq // hkv, t, k.shape[1])
    out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, hq, d).astype(q.dtype)
