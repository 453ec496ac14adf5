"""The Video-XL-Pro training loss on the shared batch: CE on the answers after the query-aware selector.

As the original's training forward (`llava_arch.prepare_inputs_labels_for_multimodal`, which runs the
selector with no training guard), per row (vmapped) of a frame bucket of Tb frames (a multiple of 4,
G = Tb / 4 group slots), n = Σ frame_valid sampled frames:

    pad       n → a multiple of 4 by duplicating frames in place (`add_video`): n < 4 repeats the last
              frame, else 4 − n % 4 distinct frames drawn from the row's key (the original: torch.randperm)
    front end SigLIP → DTS → projector → pool over the padded frames          pooled (G, 144, D)
    visual    per group [10 time rows (`training_extras`' time_ids) | 144 visual rows]   (G·154, D)
    selector  text = every valid prompt id but <image> — the answers included, as the original's training
              forward (it scores against the whole conversation); scores over the real groups' visual rows;
              feature rotary; scores added; keep rate u ~ U(lo, hi) drawn from the row's key (the original
              draws one per forward); the top k = `num_kept(n_visual, u)` visual rows and all time rows kept
    LLM       [text before <image> | visual | text after] with dropped visual rows, padded groups and padded
              text invalid (never attended to, skipped by the RoPE positions): exactly the original's
              compacted sequence; CE on the labels after <image>, the first predicted from the last kept row.

Reproducing a recorded call: the batch may carry `pad_repeat_counts` (B, Tb) int32 (0 on unsampled frames)
and `keep_rate` (B,) float32; they replace the draws.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import ConfigError
from lvjax.families.video_xl_pro.selector import (
    GROUP_SIZE,
    SELECTOR_KEYS,
    TIME_TOKENS,
    Selector,
    add_scores,
    feature_rotary,
    top_mask,
)
from lvjax.losses import IGNORE_INDEX, token_ce
from lvjax.models import dts_frontend as fe
from lvjax.models import llm
from lvjax.models.qwen2 import causal_mask, positions_from_valid


def draw_pad_counts(key: jax.Array, n: jax.Array, bucket: int) -> jax.Array:
    """(bucket,) int32 repeat counts of `add_video` for the first n (traced) of `bucket` frames: 1 per frame,
    + 4 − n for the last when n < 4, else + 1 for 4 − n % 4 (when n % 4 ≠ 0) distinct frames drawn from `key`;
    0 past n."""
    slot = jnp.arange(bucket)
    real = slot < n
    pad = -n % fe.GROUP
    chosen = top_mask(jax.random.uniform(key, (bucket,)), pad, real) & (n >= fe.GROUP)
    last = jnp.where((slot == n - 1) & (n < fe.GROUP), fe.GROUP - n, 0)
    return (real.astype(jnp.int32) + chosen + last).astype(jnp.int32)


def padded_frame_index(counts: jax.Array) -> jax.Array:
    """(bucket,) source frame of each slot after `repeat_interleave(frames, counts)` (slots past Σ counts:
    the last frame, never used)."""
    bucket = counts.shape[0]
    return jnp.minimum(jnp.searchsorted(jnp.cumsum(counts), jnp.arange(bucket), side="right"), bucket - 1)


def keep_count(n_visual: jax.Array, keep_rate: jax.Array) -> jax.Array:
    """`selector.num_kept` on traced values: ⌊n·u⌋ rounded down to a multiple of 16 (float32 product)."""
    k = jnp.floor(n_visual.astype(jnp.float32) * keep_rate.astype(jnp.float32)).astype(jnp.int32)
    return k - k % 16


def row_inputs(params: dict, cfg, vs: int, ids, valid, frames, time_ids, counts, keep_rate):
    """One row → (inputs_embeds (L, D), row validity (L,), index of the last kept visual row) with
    L = S − 1 + G·154 (see the module docstring); ids / valid (S,), frames (Tb, S, S, 3) uint8, time_ids (G, 10),
    counts (Tb,) repeat counts, keep_rate () u."""
    bucket = frames.shape[0]
    pixels = fe.device_pixels(frames)[padded_frame_index(counts)]
    pooled, _ = fe.encode_groups(params, cfg.frontend, pixels, np.ones(bucket, np.int64))
    embed = lambda x: llm.embed(params["llm"], cfg.llm, jnp.maximum(x, 0)[None])[0]  # noqa: E731
    g = bucket // fe.GROUP
    seq = jnp.concatenate([embed(time_ids.reshape(-1)).reshape(g, TIME_TOKENS, -1), pooled.astype(cfg.llm.dtype)],
                          axis=1).reshape(g * GROUP_SIZE, -1)
    group_real = jnp.arange(g) < jnp.sum(counts) // fe.GROUP
    visual_real = jnp.repeat(group_real, GROUP_SIZE - TIME_TOKENS)
    text = embed(ids)
    text_keep = jnp.concatenate([jnp.arange(vs), jnp.arange(vs + 1, ids.shape[0])])
    scores, _ = Selector(cfg.llm.dtype, cfg.llm.param_dtype).apply(
        {"params": {key: params[key] for key in SELECTOR_KEYS}}, seq, text[text_keep], valid[text_keep], visual_real)
    scores = jnp.where(visual_real, scores, 0.0)  # padded groups: no NaN/inf into dropped rows
    k = keep_count(jnp.sum(visual_real), keep_rate)
    kept = top_mask(scores, k, visual_real).reshape(g, -1)
    rows = jnp.concatenate([jnp.broadcast_to(group_real[:, None], (g, TIME_TOKENS)), kept], axis=1).reshape(-1)
    x = jnp.concatenate([text[:vs], add_scores(feature_rotary(seq), scores), text[vs + 1:]])
    v = jnp.concatenate([valid[:vs], rows, valid[vs + 1:]])
    last = vs + g * GROUP_SIZE - 1 - jnp.argmax(rows[::-1])
    return x, v, last


def video_ce(params: dict, batch: dict, spec) -> tuple[jax.Array, jax.Array]:
    """(Σ CE over the answer tokens, count) of a batch (rows vmapped; see the module docstring)."""
    cfg = spec.model_cfg
    frames, vs = batch["frames"], spec.visual_start
    b, t = frames.shape[:2]
    size = cfg.frontend.vision.image_size
    if frames.shape[2:4] != (size, size) or t % fe.GROUP:
        raise ConfigError(f"video_xl_pro: training frames (T, H, W) = {frames.shape[1:4]}: need H = W = {size} "
                          f"(data.image_size) and T a multiple of {fe.GROUP} (data.frame_buckets)")
    keys = jax.vmap(jax.random.wrap_key_data)(batch["rng"])
    pad_keys, rate_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    n = jnp.sum(batch["frame_valid"], axis=1)
    counts = batch.get("pad_repeat_counts")
    if counts is None:
        counts = jax.vmap(lambda key, m: draw_pad_counts(key, m, t))(pad_keys, n)
    rate = batch.get("keep_rate")
    if rate is None:
        lo, hi = cfg.keep_rate_range
        rate = jax.vmap(lambda key: jax.random.uniform(key, (), jnp.float32, lo, hi))(rate_keys)
    x, v, last = jax.vmap(lambda *row: row_inputs(params, cfg, vs, *row))(
        batch["input_ids"], batch["valid"], frames, batch["time_ids"], counts, rate)
    h, _ = llm.run_layers(params["llm"], cfg.llm, x, causal_mask(v), positions_from_valid(v), 0,
                          cfg.llm.num_hidden_layers)
    suffix_start = x.shape[1] - (batch["input_ids"].shape[1] - vs - 1)
    tail = jnp.concatenate([jnp.take_along_axis(h, last[:, None, None], axis=1), h[:, suffix_start:]], axis=1)
    labels = batch["labels"]
    tail_labels = jnp.concatenate([jnp.full((b, 1), IGNORE_INDEX, labels.dtype), labels[:, vs + 1:]], axis=1)
    return token_ce(llm.head(params["llm"], cfg.llm, tail), tail_labels)
