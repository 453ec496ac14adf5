"""Running the Qwen2 stack with token drops, per-stage KV caches and compacted positions.

A *stage* is a run of consecutive layers that see the same sequence. Between stages the
visual block `[visual_start, visual_start + n_visual)` shrinks: a drop returns, per batch
row, the indices (into the current visual block) that survive, and the sequence is rebuilt
as [prefix, kept visual, suffix]. RoPE positions are recomputed contiguously from the
valid slots after every drop, so each stage's KV cache (a `KVCache` of per-layer arrays)
has its own length and positions.

Sequences may hold padding slots anywhere (`valid` False): positions skip them and keys
there are masked. A row is *packed* when its padding lies behind all its real tokens; then the
plain causal layout is exact for the real tokens and self-attention can take the block-sparse
kernels or the blockwise path under one compile for every padding amount. For generation, a
prompt's last token is its last valid slot (right-aligned or packed rows); new tokens are
written at each stage cache's `length`, at positions after its valid slots.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels_pallas.block_sparse.layout import Layout, Segment
from lvjax.attention import DENSE_MAX_SCORES
from lvjax.caches import KVCache
from lvjax.config import LLMConfig
from lvjax.models.qwen2 import (
    DecoderLayer,
    Qwen2,
    causal_mask,
    decoder_stack,
    positions_from_valid,
    rope_cos_sin,
)
from lvjax.sharding import CACHE_AXES

# A drop: (hidden (B,S,D), valid (B,S), positions (B,S), query (B,S) bool, params of the next layer,
#          visual_start, n_visual) → kept indices (B, n_keep) into the current visual block, ascending.
# See models/drops.py for the rules.
DropFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Drop:
    """After `after` layers have run, keep `n_keep` of the visual tokens chosen by `select`."""

    after: int
    n_keep: int
    select: DropFn


def layer_params(params: dict, i: int) -> dict:
    """Parameters of decoder layer i, from stacked `layers` (L, ...) or a per-layer tuple (`unstack_layers`)."""
    layers = params["layers"]
    if isinstance(layers, (tuple, list)):
        return layers[i]
    return jax.tree.map(lambda a: a[i], layers)


def _slice_layers(params: dict, start: int, stop: int) -> dict:
    return jax.tree.map(lambda a: a[start:stop], params["layers"])


def unstack_layers(params: dict) -> dict:
    """The LLM tree with `layers` as a tuple of per-layer trees: what decoding reads best.

    XLA copies a layer's weights out of a stacked array before each use (the dynamic slice
    of a layer scan feeding a matmul), i.e. the whole model once per generated token; separate arrays
    are used in place. Every function here accepts either form.
    """
    layers = params["layers"]
    if isinstance(layers, (tuple, list)):
        return params
    n = jax.tree.leaves(layers)[0].shape[0]
    return {**params, "layers": tuple(jax.tree.map(lambda a: a[i], layers) for i in range(n))}


def stack_layers(params: dict) -> dict:
    """Inverse of `unstack_layers`: `layers` stacked on a leading axis (the canonical tree)."""
    layers = params["layers"]
    if not isinstance(layers, (tuple, list)):
        return params
    return {**params, "layers": jax.tree.map(lambda *a: jnp.stack(a), *layers)}


def run_layers(params: dict, cfg: LLMConfig, x, mask, positions, start: int, stop: int, layout=None):
    """Layers [start, stop) on x (B, T, D) → (x, (k, v) stacked over those layers, each (n, B, T, Hkv, D)).

    A static block-sparse `layout` (self-attention only) replaces `mask` (see `attend`).
    """
    cos, sin = rope_cos_sin(positions, cfg)
    if isinstance(params["layers"], (tuple, list)):  # per-layer arrays: one layer at a time, nothing copied
        kvs = []
        for i in range(start, stop):
            x, kv = DecoderLayer(cfg, layout).apply({"params": params["layers"][i]}, x, None, cos, sin, mask, None)
            kvs.append(kv)
        return x, jax.tree.map(lambda *a: jnp.stack(a), *kvs)
    stack = decoder_stack(cfg, stop - start, layout=layout)
    return stack.apply({"params": _slice_layers(params, start, stop)}, x, None, cos, sin, mask, None)


def gather_visual(arrays: Sequence[jax.Array], keep: jax.Array, visual_start: int, n_visual: int):
    """Rebuild each (B, S, ...) array as [prefix, visual[keep], suffix]; keep (B, n_keep)."""
    b = keep.shape[0]
    s = arrays[0].shape[1]
    prefix = jnp.broadcast_to(jnp.arange(visual_start), (b, visual_start))
    suffix = jnp.broadcast_to(jnp.arange(visual_start + n_visual, s), (b, s - visual_start - n_visual))
    idx = jnp.concatenate([prefix, keep + visual_start, suffix], axis=1)
    return [jnp.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=1) for a in arrays]


def _stages(n_layers: int, drops: Sequence[Drop]):
    """(start, stop, drop applied after stop or None) covering layers [0, n_layers)."""
    cur = 0
    for d in drops:
        yield cur, d.after, d
        cur = d.after
    if cur < n_layers or not drops:
        yield cur, n_layers, None


def use_kernels(cfg: LLMConfig, length: int = 0) -> bool:
    """Whether prefill self-attention over `length` slots takes a layout (`attend` then picks the kernel):
    on GPU/TPU, when forced by config, and elsewhere above DENSE_MAX_SCORES scores (blockwise XLA,
    no S×S buffer: a 2k+-token prompt prefills on a CPU in O(S) memory)."""
    if cfg.attention_impl == "auto":
        return jax.default_backend() in ("gpu", "tpu") or length * length > DENSE_MAX_SCORES
    return cfg.attention_impl.startswith("pallas") or cfg.attention_impl == "blockwise"


def causal_layout(length: int, pad_span: tuple[int, int] | tuple[()]):
    """Causal layout over `length` slots whose only padding is the static span [start, stop), if
    given; without a span it is the plain causal layout that `prefill` uses for packed rows."""
    if not pad_span or pad_span[1] <= pad_span[0]:
        return Layout((Segment(length),))
    start, stop = pad_span
    # The tokens before the padding are global, so the tokens after it see all of them.
    return Layout((Segment(start, is_global=True), Segment(stop - start, seq=-1), Segment(length - stop)))


def last_valid(valid: jax.Array) -> jax.Array:
    """Each row's last valid slot (B,) int32 of `valid` (B, T): where a prompt's last token sits."""
    t = valid.shape[1]
    return (t - 1 - jnp.argmax(valid[:, ::-1], axis=1)).astype(jnp.int32)


def _run_stage(params, cfg, x, valid, start, stop, hiddens: list | None, layout=None):
    """Layers [start, stop) over the whole sequence; layer by layer when every input is wanted."""
    mask, positions = causal_mask(valid), positions_from_valid(valid)
    if hiddens is None:
        return run_layers(params, cfg, x, mask, positions, start, stop, layout=layout)
    kvs = []
    for layer in range(start, stop):
        hiddens.append(x)
        x, kv = run_layers(params, cfg, x, mask, positions, layer, layer + 1, layout=layout)
        kvs.append(kv)
    return x, jax.tree.map(lambda *a: jnp.concatenate(a), *kvs)


def prefill(
    params: dict,
    cfg: LLMConfig,
    x: jax.Array,
    valid: jax.Array,
    *,
    drops: Sequence[Drop] = (),
    visual_start: int = 0,
    n_visual: int = 0,
    max_new: int = 0,
    return_hidden: bool = False,
    query: jax.Array | None = None,
    packed: bool = False,
    repack: bool = False,
):
    """Prefill embeddings x (B, T, D) with padding mask `valid` (B, T).

    `query` (B, T) bool marks the rows attention-based drops score from (default: each row's last
    valid slot). `packed` states that every row is packed (padding, if any, behind all its real
    tokens; see the module docstring), which lets self-attention use the causal block-sparse
    layout (`use_kernels`); otherwise it is dense with a mask from `valid`. Drops keep rows packed:
    they shrink the visual block and keep ascending indices. Padded rows' outputs are garbage and
    their cache slots masked. `repack` (the training forward, `prefill_packed`) is for rows with
    padding anywhere, e.g. padded frames inside the visual block: where a layout is used, each stage
    runs on its rows packed (a stable partition, so the real tokens keep their order and positions)
    and its output goes back to slot order, so the drops between stages see the original slots; it
    returns no caches or hiddens.

    Returns (final hidden (B, S_last, D) before the final norm, valid of the last stage,
    per-stage caches (None when max_new == 0), per-layer input hiddens if `return_hidden`).
    """
    if repack and (max_new or return_hidden):
        raise ValueError("prefill: repack gives no caches or hiddens (max_new=0, return_hidden=False)")
    n_layers = cfg.num_hidden_layers
    drops = sorted((d for d in drops if d.after <= n_layers), key=lambda d: d.after)
    if query is None:
        query = jnp.zeros(valid.shape, bool).at[jnp.arange(valid.shape[0]), last_valid(valid)].set(True)
    caches, hiddens = [], []
    for start, stop, drop in _stages(n_layers, drops):
        if stop > start:
            layout = causal_layout(x.shape[1], ()) if (packed or repack) and use_kernels(cfg, x.shape[1]) else None
            if repack and layout is not None:
                order = jnp.argsort(~valid, axis=1, stable=True)
                out, kv = _run_stage(params, cfg, _take_slots(x, order), _take_slots(valid, order), start, stop,
                                     None, layout)
                x = _take_slots(out, jnp.argsort(order, axis=1))
            else:
                x, kv = _run_stage(params, cfg, x, valid, start, stop, hiddens if return_hidden else None, layout)
            if max_new:
                caches.append(_stage_cache(kv, valid, x.shape[1] + max_new))
        if drop is not None:
            # Attention rules score with the next layer's projections (none after the last layer).
            next_layer = layer_params(params, min(stop, n_layers - 1))
            keep = drop.select(x, valid, positions_from_valid(valid), query, next_layer, visual_start, n_visual)
            x, valid, query = gather_visual([x, valid, query], keep, visual_start, n_visual)
            n_visual = drop.n_keep
    return x, valid, (caches if max_new else None), hiddens


def prefill_packed(params: dict, cfg: LLMConfig, x: jax.Array, valid: jax.Array, *, drops: Sequence[Drop] = (),
                   visual_start: int = 0, n_visual: int = 0, query: jax.Array | None = None) -> jax.Array:
    """Final hidden (B, S_last, D) before the final norm of the training forward, in x's slot order
    (shortened by the drops); `valid` (B, T) may hold padding anywhere.

    Where a layout is used (`use_kernels`), every stage runs with each row's padding moved behind
    its real tokens (`prefill(..., repack=True)`), which makes the causal layout without a padding
    span exact for them, and attention takes the kernels (or the blockwise path) instead of a dense
    S×S mask, with LP-Comp's drops too. Padding slots' outputs then differ from the dense path's:
    they must carry no labels.
    """
    return prefill(params, cfg, x, valid, drops=drops, visual_start=visual_start, n_visual=n_visual, query=query,
                   repack=True)[0]


def _take_slots(a: jax.Array, idx: jax.Array) -> jax.Array:
    """a (B, T, ...) gathered along its slots by idx (B, T)."""
    return jnp.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=1)


def _stage_cache(kv, valid, capacity: int) -> KVCache:
    """A stage's cache from its (k, v), each (layers, B, S, Hkv, D): one (B, Hkv, capacity, D) array
    per layer, heads before slots, so that a decode step reads each layer's cache as is and writes
    one slot in place (no stacked copies, no transposes); `valid` (B, S) masks the padding."""
    k, v = (tuple(a[i].transpose(0, 2, 1, 3) for i in range(a.shape[0])) for a in kv)
    c = KVCache.prefilled(k, v, capacity, valid)
    shard = lambda a: nn.with_logical_constraint(a, CACHE_AXES)  # noqa: E731
    return dataclasses.replace(c, k=jax.tree.map(shard, c.k), v=jax.tree.map(shard, c.v))


def extend(params: dict, cfg: LLMConfig, x: jax.Array, x_valid: jax.Array, caches: Sequence[KVCache]):
    """Run new tokens x (B, T, D) after what the stage caches hold (decoding when T == 1).

    The tokens are written at slots `length + [0, T)` of every stage's cache; `x_valid` (B, T)
    marks real tokens (padding slots stay masked). Each token sees the valid cached slots and
    the new ones up to itself. Layers run one by one on their own parameter and cache arrays
    (see `unstack_layers`). Returns (hidden (B, T, D) before the final norm, updated caches).
    """
    t = x.shape[1]
    new_mask = jnp.tril(jnp.ones((t, t), bool))[None] & x_valid[:, None, :]
    new_caches = []
    layer = 0
    for c in caches:
        count = jnp.sum(c.valid, axis=1, dtype=jnp.int32)  # slots at and after `length` are not valid yet
        positions = count[:, None] + jnp.cumsum(x_valid.astype(jnp.int32), axis=1) - 1
        cos, sin = rope_cos_sin(jnp.maximum(positions, 0), cfg)
        ks, vs = [], []
        for kc, vc in zip(c.k, c.v):
            x, (k, v) = DecoderLayer(cfg).apply({"params": layer_params(params, layer)}, x, (kc, vc), cos, sin,
                                                (c.valid[:, None, :], new_mask), c.length)
            ks.append(k)
            vs.append(v)
            layer += 1
        new_caches.append(c.written(tuple(ks), tuple(vs), t, x_valid))
    if layer != cfg.num_hidden_layers:
        raise ValueError(f"caches cover {layer} layers, the model has {cfg.num_hidden_layers}")
    return x, new_caches


def head(params: dict, cfg: LLMConfig, x: jax.Array) -> jax.Array:
    """Final norm + LM head: (B, T, D) → fp32 logits (B, T, V)."""
    return Qwen2(cfg).apply({"params": params}, x, method=Qwen2.head)


def embed(params: dict, cfg: LLMConfig, ids: jax.Array) -> jax.Array:
    """Token embeddings (B, T) → (B, T, D)."""
    return Qwen2(cfg).apply({"params": params}, ids, method=Qwen2.embed)
