"""Video-XL-Pro's query-aware selector (`llava_arch.prepare_inputs_labels_for_multimodal`) and the splice.

The visual sequence is G groups of 154 rows: 10 time-text rows, then 144 visual rows. Per call:

1. text_feat = GELU(text_mlp(embed(prompt ids without <image>)))            (T, D)
2. WindowTimeToTokenAttention, per group (4 heads, head_dim D/4): the 144 visual rows through `k_proj`
   are the queries, the group's 10 time rows through `q_proj` are keys **and** values (`v_proj` is
   unused), softmax(·/√head_dim), `out_proj`; time rows pass unchanged. (The original masks other
   groups with −6e4 before one softmax over all time rows; those weights underflow to exactly 0.)
3. score_i = mean_j <wtta_out[visual i], text_feat_j>, min-max normalised to [0, 1]       (G·144,)
4. the *original* visual sequence gets the feature rotary (`feature_rotary`), then score_i is added to
   every dim of visual row i;
5. k = ⌊G·144·u⌋ rounded down to a multiple of 16 (`num_kept`); the top-k visual rows by score and all
   time rows are kept, in sequence order.

Parameter tree: text_mlp/{kernel (D, D), bias}, WindowTimeToTokenAttention/{q,k,v,out}_proj/{kernel, bias}.
"""

from __future__ import annotations

import math
import random

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvjax.models.dts import dense

TIME_TOKENS = 10  # per group (the original's `num_query_tokens`)
GROUP_SIZE = 154  # 10 time rows + 144 visual rows
HEADS = 4
ROTARY_BASE = 1e6
SELECTOR_KEYS = ("text_mlp", "WindowTimeToTokenAttention")  # the selector's parameter subtrees


class WindowTimeToTokenAttention(nn.Module):
    """(G·154, D) visual sequence → same shape with each group's 144 visual rows replaced (step 2)."""

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, seq):
        n, d = seq.shape
        g, hd = n // GROUP_SIZE, d // HEADS
        groups = seq.reshape(g, GROUP_SIZE, d)
        proj = lambda name, x: dense(d, name, self.dtype, self.param_dtype)(x)  # noqa: E731
        times = proj("q_proj", groups[:, :TIME_TOKENS]).reshape(g, TIME_TOKENS, HEADS, hd)
        visual = proj("k_proj", groups[:, TIME_TOKENS:]).reshape(g, -1, HEADS, hd)
        if self.is_initializing():  # stored by the original, never used
            proj("v_proj", groups[:1, :1])
        logits = jnp.einsum("gvhc,gthc->ghvt", visual, times) / math.sqrt(hd)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(seq.dtype)
        out = jnp.einsum("ghvt,gthc->gvhc", probs, times).reshape(g, -1, d)
        out = proj("out_proj", out)
        return jnp.concatenate([groups[:, :TIME_TOKENS], out], axis=1).reshape(n, d)


class Selector(nn.Module):
    """Scores (G·144,) of the visual rows and the intermediates (steps 1–3).

    Training's padded rows: `text_valid` (T,) leaves padding text out of the mean, `visual_valid` (G·144,)
    the visual rows of padded groups out of the min-max (their scores are then meaningless)."""

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, seq, text_embeds, text_valid=None, visual_valid=None):
        d = seq.shape[-1]
        text_feat = nn.gelu(dense(d, "text_mlp", self.dtype, self.param_dtype)(text_embeds), approximate=False)
        wtta = WindowTimeToTokenAttention(self.dtype, self.param_dtype, name="WindowTimeToTokenAttention")(seq)
        visual = wtta.reshape(-1, GROUP_SIZE, d)[:, TIME_TOKENS:].reshape(-1, d)
        raw = jnp.mean(visual @ text_feat.T, axis=-1, where=None if text_valid is None else text_valid[None])
        if visual_valid is None:
            lo, hi = raw.min(), raw.max()
        else:
            lo, hi = jnp.min(raw, where=visual_valid, initial=jnp.inf), jnp.max(raw, where=visual_valid, initial=-jnp.inf)
        scores = (raw - lo) / (hi - lo)
        return scores, {"text_feat": text_feat, "wtta_out": wtta}


def feature_rotary(x: jax.Array) -> jax.Array:
    """`rotary_position_embedding` of (N, D): pairs (2k, 2k+1) rotated by position·base^(−2k/D), position = row.
    Angles are formed as the original, in float32 (position × div_term)."""
    n, d = x.shape
    div = jnp.exp(jnp.arange(0, d, 2, dtype=jnp.float32) * jnp.float32(-(math.log(ROTARY_BASE) / d)))
    angle = jnp.arange(n, dtype=jnp.float32)[:, None] * div[None]
    cos, sin = jnp.repeat(jnp.cos(angle), 2, axis=-1), jnp.repeat(jnp.sin(angle), 2, axis=-1)
    alternate = jnp.stack([-x[:, 1::2], x[:, ::2]], axis=-1).reshape(n, d)
    return (x * cos + alternate * sin).astype(x.dtype)


def num_kept(n_visual: int, keep_rate: float) -> int:
    """k = int(n·u) − int(n·u) % 16 (the original's `save_time_sum`)."""
    k = int(n_visual * keep_rate)
    return k - k % 16


def draw_keep_rate(seed: int | None, lo: float = 0.7, hi: float = 0.99) -> float:
    """The original's `random.uniform(0.7, 0.99)`, from `random.Random(seed)` (seed None → 0)."""
    return random.Random(0 if seed is None else int(seed)).uniform(lo, hi)


def visual_slots(n_groups: int) -> np.ndarray:
    """Positions (G·144,) of the visual rows in the visual sequence."""
    return (np.arange(n_groups)[:, None] * GROUP_SIZE + np.arange(TIME_TOKENS, GROUP_SIZE)[None]).reshape(-1)


def top_mask(scores: jax.Array, k, valid: jax.Array | None = None) -> jax.Array:
    """(n,) bool: the k (static or traced) highest `scores` (n,) among the `valid` ones — `torch.topk`'s set,
    ties to the lower index (as `lax.top_k`)."""
    if valid is not None:
        scores = jnp.where(valid, scores, -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-scores, stable=True), stable=True)
    keep = rank < k
    return keep if valid is None else keep & valid


def add_scores(seq_rot: jax.Array, scores: jax.Array) -> jax.Array:
    """Step 4's addition: `scores` (G·144,) added to every dim of the visual rows of (G·154, D)."""
    slots = jnp.asarray(visual_slots(seq_rot.shape[0] // GROUP_SIZE))
    return seq_rot.at[slots].add(scores[:, None].astype(seq_rot.dtype))


def select(seq_rot: jax.Array, scores: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(kept rows (N − n_vis + k, D) in sequence order, kept visual positions (k,)) of the rotated sequence
    (N, D) with `scores` added to the visual rows (steps 4–5)."""
    n = seq_rot.shape[0]
    slots = jnp.asarray(visual_slots(n // GROUP_SIZE))
    kept = slots[jnp.nonzero(top_mask(scores, k), size=k)[0]]
    keep_mask = jnp.ones(n, bool).at[slots].set(False).at[kept].set(True)
    rows = jnp.nonzero(keep_mask, size=n - slots.shape[0] + k)[0]
    return add_scores(seq_rot, scores)[rows], kept
