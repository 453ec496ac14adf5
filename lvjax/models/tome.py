"""ToMe clip-level token merging (VideoChat-Flash `tome16_mlp_hd64`, HiCo part 1).

Bipartite soft matching, one round on tokens x (p, C) with sizes s (p,):
  metric = x.reshape(p, heads, C/heads).mean(heads), L2-normalised, in float32;
  a = even tokens, b = odd tokens, scores = a·bᵀ; each a picks its best b (first maximum);
  a tokens are ordered by their best score, descending; the first r merge into their b
  (size-weighted mean: Σ x·s / Σ s), the others stay;
  output = concat(unmerged a in that order, all b in their original order); sizes add up.
Rounds remove r = min(p//2, p − target) tokens until `target` remain (`merge_schedule`).

Everything has static shapes (r is a Python int per round) and is jittable; clips are vmapped.

Ties: the edge order is a *stable* descending sort (equal scores keep the lower a index
first). torch's `argsort(descending=True)` on CPU is stable only for ≤ 16 elements (insertion
sort); above that its order among exactly equal scores is an artefact of its introsort. Exact
ties only arise between identical tokens (e.g. duplicated frames), where the merged values are
the same whichever tied token is taken first; the assignment may then differ from torch's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def merge_schedule(num_tokens: int, target: int) -> tuple[int, ...]:
    """Tokens removed per round: r = p//2 while p − target > p//2, then p − target.

    e.g. (3136, 64) → (1568, 784, 392, 196, 98, 34). Empty when num_tokens == target.
    """
    if target < 1 or num_tokens < target:
        raise ValueError(f"ToMe: cannot merge {num_tokens} tokens down to {target}")
    rounds = []
    p = num_tokens
    while p != target:
        r = p - target if p - target <= p // 2 else p // 2
        rounds.append(r)
        p -= r
    return tuple(rounds)


def _metric(x: jax.Array, heads: int) -> jax.Array:
    """(p, C) → head-averaged, L2-normalised float32 metric (p, C/heads)."""
    p, c = x.shape
    m = x.astype(jnp.float32).reshape(p, heads, c // heads).mean(axis=1)
    return m / jnp.linalg.norm(m, axis=-1, keepdims=True)


def bipartite_round(x: jax.Array, size: jax.Array, assign: jax.Array, heads: int, r: int):
    """One ToMe round on one clip.

    x (p, C) float32 features, size (p,) float32 token sizes, assign (N,) int32 (input token →
    current index). Returns (x (p−r, C), size (p−r,), assign (N,)).
    """
    p = x.shape[0]
    na, nb = (p + 1) // 2, p // 2
    if not 0 < r <= nb:
        raise ValueError(f"ToMe round: r={r} must be in 1..{nb} for {p} tokens")
    metric = _metric(x, heads)
    scores = jnp.matmul(metric[0::2], metric[1::2].T, precision=jax.lax.Precision.HIGHEST)  # (na, nb)
    node_max = scores.max(axis=-1)
    node_idx = scores.argmax(axis=-1)  # first maximum, as torch.max
    edge = jnp.argsort(node_max, descending=True, stable=True)
    src, unm = edge[:r], edge[r:]
    dst = node_idx[src]

    def merge(v):  # v (p, ...) → (p − r, ...): unmerged a, then b with the merged a added
        va, vb = v[0::2], v[1::2]
        return jnp.concatenate([va[unm], vb.at[dst].add(va[src])], axis=0)

    new_x = merge(x * size[:, None])
    new_size = merge(size)
    new_x = new_x / new_size[:, None]

    rank = jnp.zeros((na,), jnp.int32).at[edge].set(jnp.arange(na, dtype=jnp.int32))
    base = na - r  # where the b tokens start in the output
    pos_a = jnp.where(rank >= r, rank - r, base + node_idx.astype(jnp.int32))
    pos_b = base + jnp.arange(nb, dtype=jnp.int32)
    new_pos = jnp.zeros((p,), jnp.int32).at[0::2].set(pos_a).at[1::2].set(pos_b)
    return new_x, new_size, new_pos[assign]


def merge_tokens(x: jax.Array, heads: int, target: int):
    """ToMe one clip: x (N, C) → (tokens (target, C) in x.dtype, sizes (target,) f32, assign (N,) i32).

    The merge runs in float32. `assign[j]` is the output index that input token j ended in.
    """
    n = x.shape[0]
    h = x.astype(jnp.float32)
    size = jnp.ones((n,), jnp.float32)
    assign = jnp.arange(n, dtype=jnp.int32)
    for r in merge_schedule(n, target):
        h, size, assign = bipartite_round(h, size, assign, heads, r)
    return h.astype(x.dtype), size, assign


@functools.partial(jax.jit, static_argnames=("heads", "target", "return_assign"))
def merge_clips(x: jax.Array, heads: int, target: int, return_assign: bool = False):
    """ToMe each clip independently.

    x (B, N, C) ViT features of B clips (N = L·grid²); `heads` is the ViT's attention head
    count (the metric averages C over heads groups); `target` the tokens kept per clip (16·L).
    Returns (tokens (B, target, C) in x.dtype, sizes (B, target) float32) and, with
    `return_assign`, assign (B, N) int32: input token j of clip b → its output index.
    """
    if x.shape[-1] % heads:
        raise ValueError(f"ToMe: width {x.shape[-1]} is not divisible by heads={heads}")
    tokens, sizes, assign = jax.vmap(lambda c: merge_tokens(c, heads, target))(x)
    return (tokens, sizes, assign) if return_assign else (tokens, sizes)
