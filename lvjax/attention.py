"""The one attention entry point of lvjax.

`attend(q, k, v, mask=...)` computes softmax(q·kᵀ·scale + mask)·v with grouped-query heads,
fp32 softmax and no repeated K/V. Shapes: q (B, T, Hq, D), k and v (B, S, Hkv, D),
mask boolean broadcastable to (B, T, S) (True = may attend). Rows with no allowed key give 0.
`attend(q, k, v, layout=...)` takes a block-sparse layout (kernels_pallas.block_sparse) and
chooses the implementation (`choose_impl`, docs/kernels.md): the Pallas kernels on TPU/GPU,
blockwise XLA attention for long sequences elsewhere, the dense masked path for short ones.
Under a mesh with a `sequence` axis the kernels run sequence-parallel (`query_split`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels_pallas.block_sparse.api import block_sparse_attention
from kernels_pallas.block_sparse.blockwise import blockwise_attention
from kernels_pallas.block_sparse.sharded import split_queries
from lvjax.sharding import BATCH_AXES, SEQUENCE_AXIS, TENSOR_AXIS, divides

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


def _dense(q, k, v, mask, scale):
    """The dense path with one pass over the (Hq, T, S) scores: masked logits, exp(l − max), then
    P·V normalised afterwards by the row sums — rows with no allowed key are zeroed on the
    (T, D) output, not on the scores. q (B,T,Hq,D), k/v (B,S,Hkv,D) → (B,T,Hq,D) in q's dtype."""
    b, t, hq, d = q.shape
    s = k.shape[1]
    logits = _grouped_logits(q, k, scale)  # (B, Hkv, G, T, S)
    m = _broadcast_mask(mask, b, t, s)
    if m is not None:
        logits = jnp.where(m, logits, _NEG)
    peak = jax.lax.stop_gradient(logits.max(-1, keepdims=True))
    p = jnp.exp(logits - peak)
    total = p.sum(-1)
    out = jnp.einsum("bkgts,bskd->bkgtd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = out / total[..., None]
    if m is not None:
        out = jnp.where(m.any(-1)[..., None], out, 0.0)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, hq, d).astype(q.dtype)


def attend_cached(q, k, v, cache_k, cache_v, cache_mask, mask=None, *, scale: float | None = None):
    """New tokens attending to a cache they are not yet written into, then to themselves.

    q (B, T, Hq, D), k/v (B, T, Hkv, D) the new tokens; cache_k/cache_v (B, Hkv, S, D), the
    cache layout (one contiguous (S, D) block per head: no transposes in decode);
    cache_mask (B, T|1, S) bool over cache slots; mask (B, T, T) over the new tokens (default
    causal). One softmax over [cache | new] in fp32. Reading the old cache and writing the new
    rows afterwards lets XLA update the cache in place. Returns (B, T, Hq, D) in q's dtype.
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    scale = d**-0.5 if scale is None else scale
    qg = q.reshape(b, t, hkv, hq // hkv, d)
    lc = jnp.einsum("btkgd,bksd->bkgts", qg, cache_k, preferred_element_type=jnp.float32) * scale
    ln = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    if mask is None:
        mask = jnp.tril(jnp.ones((t, t), bool))[None]
    mc = jnp.broadcast_to(jnp.asarray(cache_mask, bool), (b, t, cache_k.shape[2]))[:, None, None]
    mn = jnp.broadcast_to(jnp.asarray(mask, bool), (b, t, t))[:, None, None]
    lc, ln = jnp.where(mc, lc, _NEG), jnp.where(mn, ln, _NEG)
    peak = jax.lax.stop_gradient(jnp.maximum(lc.max(-1), ln.max(-1)))[..., None]
    pc, pn = jnp.exp(lc - peak), jnp.exp(ln - peak)
    total = pc.sum(-1) + pn.sum(-1)
    out = (jnp.einsum("bkgts,bksd->bkgtd", pc.astype(v.dtype), cache_v, preferred_element_type=jnp.float32)
           + jnp.einsum("bkgts,bskd->bkgtd", pn.astype(v.dtype), v, preferred_element_type=jnp.float32))
    out = out / total[..., None]
    out = jnp.where((mc.any(-1) | mn.any(-1))[..., None], out, 0.0)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, hq, d).astype(q.dtype)


IMPLS = ("auto", "dense", "blockwise", "pallas_tpu", "pallas_gpu", "pallas_interpret")
_ALIASES = {"xla": "dense"}  # the name of the dense path before blockwise attention existed
DENSE_MAX_SCORES = 1024 * 1024  # "auto" off TPU/GPU: dense while Tq·S ≤ this, blockwise above (docs/kernels.md)


def choose_impl(impl: str, tq: int, s: int, head_dim: int, *, layout=None, mask=None, backend: str | None = None) -> str:
    """The implementation `attend` runs: one of IMPLS other than "auto" (see docs/kernels.md).

    Without a layout, or with a layout and an extra `mask`, only the dense path applies. With
    a layout, "auto" picks the Pallas kernel of the backend (TPU; GPU when head_dim is a power
    of two ≥ 16, which Triton blocks need), else dense for Tq·S ≤ DENSE_MAX_SCORES and
    blockwise XLA attention above. An explicit impl is honoured (or rejected if it cannot run).
    """
    impl = _ALIASES.get(impl, impl)
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; expected one of {IMPLS}")
    if layout is None or mask is not None:
        if impl not in ("auto", "dense"):
            raise ValueError(f"attend: impl {impl!r} needs a `layout` and no `mask`")
        return "dense"
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    if backend == "tpu":
        return "pallas_tpu"
    if backend == "gpu" and head_dim >= 16 and head_dim & (head_dim - 1) == 0:
        return "pallas_gpu"
    return "dense" if tq * s <= DENSE_MAX_SCORES else "blockwise"


def query_split(batch: int, kv_heads: int) -> dict | None:
    """How the block-sparse kernels split their queries under the mesh set by `jax.set_mesh`
    (`sharded.split_queries` arguments), or None (the whole attention on every device).

    Split when the mesh has a `sequence` axis of n > 1 devices and no axis is manual yet (inside a
    shard_map the caller has split): queries on `sequence`, as `activation_length` splits the
    hidden states; the batch on the data / fsdp axes when their product divides it, heads on
    `tensor` when it divides Hkv (as the q/k/v projections leave them); other axes replicate.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.manual_axes or mesh.shape.get(SEQUENCE_AXIS, 1) == 1:
        return None

    def axes(names, size):
        names = tuple(a for a in names if mesh.shape.get(a, 1) > 1)
        return names if divides(size, names, mesh.shape) else ()

    return {"axis": SEQUENCE_AXIS, "count": mesh.shape[SEQUENCE_AXIS], "batch_axes": axes(BATCH_AXES, batch),
            "head_axes": axes((TENSOR_AXIS,), kv_heads)}


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
    q_offset: int | None = None,
):
    """Masked multi-head attention with GQA. Returns (B, T, Hq, D) in q's dtype.

    q (B, T, Hq, D), k/v (B, S, Hkv, D). `layout` (kernels_pallas.block_sparse.Layout over
    the S keys) says who attends to whom; the queries are layout positions q_offset ..
    q_offset+T-1 (default the last T: a new chunk or window attending to a cache; T == S
    is self-attention). `mask` (broadcastable to (B, T, S)) is ANDed in on the dense path.
    `impl` is one of IMPLS: "auto" (`choose_impl`), "dense" (the XLA reference; "xla" is an
    alias), "blockwise" (XLA, no S×S buffer), "pallas_tpu" / "pallas_gpu" (block-sparse
    kernels; on CPU they run interpreted), "pallas_interpret" (the GPU kernel, interpreted).
    `interpret` forces interpret mode for the Pallas kernels. A permuted layout (self-attention only)
    takes q/k/v in original order: the dense path applies its mask by original position, the kernels
    get q/k/v gathered into the layout's order and the output is put back. Under a `sequence` mesh
    axis the kernels each take 1/n of the (gathered) queries and only their blocks (`query_split`).
    """
    b, t, hq, d = q.shape
    s = k.shape[1]
    choice = choose_impl(impl, t, s, d, layout=layout, mask=mask)
    if choice == "dense":
        if layout is not None:
            if s != layout.length:
                raise ValueError(f"attend: key length {s} != layout length {layout.length}")
            start = s - t if q_offset is None else q_offset
            lmask = jnp.asarray(layout.original_mask(start, start + t))
            mask = lmask if mask is None else jnp.logical_and(jnp.asarray(mask, bool), lmask)
        return _dense(q, k, v, mask, d**-0.5 if scale is None else scale)
    if layout.permuted:  # the kernels work in the layout's order: gather q/k/v into it, scatter the output back
        if t != s or q_offset not in (None, 0):
            raise ValueError(f"attend: a permuted layout is for self-attention ({t} queries, {s} keys)")
        order, inverse = jnp.asarray(layout.order), jnp.asarray(layout.inverse)
        q, k, v = q[:, order], k[:, order], v[:, order]
    if choice == "blockwise":
        kernel = functools.partial(blockwise_attention, layout=layout, scale=scale)
    else:
        interpret = interpret or choice == "pallas_interpret" or jax.default_backend() == "cpu"
        backend = "tpu" if choice == "pallas_tpu" else "gpu"
        kernel = functools.partial(block_sparse_attention, layout=layout, scale=scale, backend=backend,
                                   interpret=interpret)
    split = query_split(b, k.shape[2])
    out = (kernel(q, k, v, q_offset=q_offset) if split is None
           else split_queries(kernel, q, k, v, q_offset=q_offset, **split))[0]
    return out[:, inverse] if layout.permuted else out
