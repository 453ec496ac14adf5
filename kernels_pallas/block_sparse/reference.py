"""Dense masked reference (pure jnp) for the block-sparse kernels: small sizes only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .layout import Layout

_NEG = -0.7 * float(np.finfo(np.float32).max)


def reference_attention(q, k, v, mask, *, scale: float | None = None):
    """Dense masked GQA attention with fp32 softmax.

    q (B, T, Hq, D), k/v (B, S, Hkv, D), mask (T, S) bool (True = attend).
    Returns (out (B, T, Hq, D) in q.dtype, lse (B, Hq, T) fp32); rows with no allowed key
    give out = 0 and lse = -inf.
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    g = hq // hkv
    scale = d**-0.5 if scale is None else scale
    qg = q.reshape(b, t, hkv, g, d)
    s = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    m = jnp.asarray(mask, bool)[None, None, None]
    s = jnp.where(m, s, _NEG)
    mx = jax.lax.stop_gradient(s.max(-1, keepdims=True))
    p = jnp.where(m, jnp.exp(s - mx), 0.0)
    l = p.sum(-1, keepdims=True)
    nonempty = l > 0
    p = p / jnp.where(nonempty, l, 1.0)
    lse = jnp.where(nonempty, mx + jnp.log(jnp.where(nonempty, l, 1.0)), -jnp.inf)[..., 0]
    pv = p.astype(v.dtype) if v.dtype != jnp.float32 else p
    out = jnp.einsum("bkgts,bskd->btkgd", pv, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, hq, d).astype(q.dtype), lse.reshape(b, hq, t)


def reference_from_layout(q, k, v, layout: Layout, *, scale: float | None = None):
    """`reference_attention` with the layout's mask (T == S == layout.length; q/k/v in the layout's order)."""
    mask = layout.mask_rows(0, layout.length)
    return reference_attention(q, k, v, np.asarray(mask), scale=scale)
