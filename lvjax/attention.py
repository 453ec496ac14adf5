"""The one attention entry point of lvjax.

`attend(q, k, v, mask=...)` computes softmax(q·kᵀ·scale + mask)·v with grouped-query heads,
fp32 softmax and no repeated K/V. Shapes: q (B, T, Hq, D), k and v (B, S, Hkv, D),
mask boolean broadcastable to (B, T, S) (True = may attend). Rows with no allowed key give 0.
`attend(q, k, v, layout=...)` takes a block-sparse layout (kernels_pallas.block_sparse) and
runs the Pallas kernels on TPU/GPU (docs/kernels.md), the dense path with its mask elsewhere.
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


_IMPLS = ("auto", "xla", "pallas_tpu", "pallas_gpu")


def attend(
    q,
    k,
    v,
    mask=None,
    *,
    scale: float | None = None,
    impl: str = "auto",
    layout=None,
    interpret: bool = False,
):
    """Masked multi-head attention with GQA. Returns (B, T, Hq, D) in q's dtype.

    `impl` selects the implementation: "xla" is the dense XLA reference; "pallas_tpu" /
    "pallas_gpu" the block-sparse Pallas kernels (need `layout`); "auto" is the dense path
    without a layout, and with one the kernel of the default backend (dense on CPU).
    `layout` (kernels_pallas.block_sparse.Layout, T == S == layout.length) says who attends
    to whom; on the dense path it is turned into a mask (ANDed with `mask`). `interpret`
    runs the Pallas kernels in interpret mode (CPU tests).
    """
    if impl not in _IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; expected one of {_IMPLS}")
    if layout is not None:
        if impl == "auto":
            impl = {"tpu": "pallas_tpu", "gpu": "pallas_gpu"}.get(jax.default_backend(), "xla")
        if impl != "xla":
            if mask is not None:
                raise ValueError("attend: pass either `layout` or `mask` to the Pallas kernels, not both")
            from kernels_pallas.block_sparse.api import block_sparse_attention

            backend = "tpu" if impl == "pallas_tpu" else "gpu"
            interpret = interpret or jax.default_backend() == "cpu"  # a forced kernel on CPU runs interpreted
            out, _ = block_sparse_attention(q, k, v, layout, scale=scale, backend=backend, interpret=interpret)
            return out
        if q.shape[1] != layout.length or k.shape[1] != layout.length:
            raise ValueError(f"attend: q/k lengths {q.shape[1]}/{k.shape[1]} != layout length {layout.length}")
        lmask = jnp.asarray(layout.dense_mask())
        mask = lmask if mask is None else jnp.logical_and(jnp.asarray(mask, bool), lmask)
    elif impl not in ("auto", "xla"):
        raise ValueError(f"attend: impl {impl!r} needs a `layout`")
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    probs = attention_probs(q, k, mask, scale=scale).reshape(b, hkv, hq // hkv, t, k.shape[1])
    out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, hq, d).astype(q.dtype)
