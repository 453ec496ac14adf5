"""The Video-XL-2 training loss on the shared batch: CE on the answers after a dense or chunk-sparse prefill.

Row layout fed to the LLM (static for a frame bucket of Tb frames, G = Tb / 4 groups):

    [text before <image>] [G × (TIME_SLOTS time slots | 144 visual tokens)] [text after <image>]

Each group's `"Time {t}s:"` ids (`training_extras` → `time_ids` (G, TIME_SLOTS), −1 = unused slot)
fill its time slots; unused slots and the groups of padded frames are invalid rows (never attended
to, skipped by the RoPE positions), so the forward is exactly the unpadded prompt's. Frames are
grouped in fours as they come (the data pipeline repeats the last frame up to a multiple of 4, as
`pad_counts_last`). spec.compression 'chunk_sparse[:BLOCK[:PREV]]' applies the sparse prefill mask of
eval/lvu w_chunk (`sparse.chunk_mask`'s rule: chunks of BLOCK groups (default 4) see PREV chunks back
(default 3)); 'none' / 'dense' the plain causal mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import ConfigError
from lvjax.losses import IGNORE_INDEX, token_ce
from lvjax.models import dts_frontend as fe
from lvjax.models import llm
from lvjax.models.qwen2 import causal_mask, positions_from_valid

TIME_SLOTS = 16  # time-text slots per group (the Qwen2 tokenizer needs ≤ 10 for "Time {t}s:")
BLOCK_GROUPS, PREV_BLOCKS = 4, 3  # the released w_chunk defaults (block_size_chosed, prev_blocks_num)
PREFIX, TIME, VISUAL, SUFFIX = 0, 1, 2, 3


def time_ids(tokenizer, seconds: np.ndarray, bucket: int) -> np.ndarray:
    """(bucket / 4, TIME_SLOTS) int32 ids of each group's `"Time {t}s:"` (`fe.group_time_ids`)."""
    return fe.group_time_ids(tokenizer, seconds, bucket, fe.XL2_TIME_FORMAT, TIME_SLOTS)


def block_kinds(vs: int, n_groups: int, per_group: int, n_text: int) -> tuple[np.ndarray, np.ndarray]:
    """(kind, group) (L,) int32 of every row position: PREFIX / TIME / VISUAL / SUFFIX, and the group index."""
    one = np.r_[np.full(TIME_SLOTS, TIME), np.full(per_group, VISUAL)]
    kind = np.concatenate([np.full(vs, PREFIX), np.tile(one, n_groups), np.full(n_text, SUFFIX)]).astype(np.int32)
    group = np.concatenate([np.zeros(vs), np.repeat(np.arange(n_groups), TIME_SLOTS + per_group),
                            np.full(n_text, n_groups)]).astype(np.int32)
    return kind, group


def chunk_options(compression: str) -> tuple[int, int] | None:
    """'chunk_sparse[:block[:prev]]' → (block, prev); 'none' / 'dense' → None."""
    if compression in ("none", "dense"):
        return None
    name, *nums = compression.split(":")
    try:
        vals = [int(x) for x in nums]
    except ValueError:
        vals = [0]
    if name != "chunk_sparse" or len(vals) > 2 or any(v < 1 for v in vals):
        raise ConfigError(f"video_xl2: model.compression={compression!r} (expected none, dense or "
                          "chunk_sparse[:block_groups[:prev_blocks]], e.g. chunk_sparse:4:3)")
    return tuple(vals + [BLOCK_GROUPS, PREV_BLOCKS][len(vals):])


def sparse_mask(kind: np.ndarray, group: np.ndarray, valid: jax.Array, block: int = BLOCK_GROUPS,
                prev: int = PREV_BLOCKS) -> jax.Array:
    """(B, L, L) bool: the w_chunk prefill rule (causal; prefix keys, suffix queries and time tokens
    both ways are free; a visual query sees the visual keys of its chunk and `prev` chunks back)."""
    chunk = group // block
    vis = kind == VISUAL
    free = (kind[None, :] == PREFIX) | (kind[:, None] == SUFFIX) | (kind[:, None] == TIME) | (kind[None, :] == TIME)
    near = vis[:, None] & vis[None, :] & (chunk[None, :] >= chunk[:, None] - prev)
    return jnp.asarray(np.tril(free | near))[None] & valid[:, None, :]


def video_ce(params: dict, batch: dict, spec) -> tuple[jax.Array, jax.Array]:
    """(Σ CE over the answer tokens, count) of a batch; see the module docstring."""
    cfg = spec.model_cfg
    frames, vs = batch["frames"], spec.visual_start
    b, t = frames.shape[:2]
    size, per = cfg.frontend.vision.image_size, cfg.frontend.tokens_per_group
    if frames.shape[2:4] != (size, size) or t % fe.GROUP:
        raise ConfigError(f"video_xl2: training frames (T, H, W) = {frames.shape[1:4]}: need H = W = {size} "
                          f"(data.image_size) and T a multiple of {fe.GROUP} (data.frame_buckets)")
    pixels = fe.device_pixels(frames)
    pooled = jax.vmap(lambda p: fe.encode_groups(params, cfg.frontend, p, np.ones(t, np.int64))[0])(pixels)
    ids, labels, valid, tids = batch["input_ids"], batch["labels"], batch["valid"], batch["time_ids"]
    g = t // fe.GROUP
    embed = lambda x: llm.embed(params["llm"], cfg.llm, jnp.maximum(x, 0))  # noqa: E731
    time_rows = embed(tids.reshape(b, -1)).reshape(b, g, TIME_SLOTS, -1)
    visual = jnp.concatenate([time_rows, pooled.astype(time_rows.dtype)], axis=2).reshape(b, g * (TIME_SLOTS + per), -1)
    text = embed(ids)
    x = jnp.concatenate([text[:, :vs], visual, text[:, vs + 1:]], axis=1)
    group_valid = batch["frame_valid"].reshape(b, g, fe.GROUP).any(-1)
    block_valid = jnp.concatenate([tids >= 0, jnp.repeat(group_valid[:, :, None], per, axis=2)], axis=2)
    v = jnp.concatenate([valid[:, :vs], block_valid.reshape(b, -1), valid[:, vs + 1:]], axis=1)
    chunked = chunk_options(spec.compression)
    if chunked:
        mask = sparse_mask(*block_kinds(vs, g, per, ids.shape[1] - vs - 1), v, *chunked)
    else:
        mask = causal_mask(v)
    h, _ = llm.run_layers(params["llm"], cfg.llm, x, mask, positions_from_valid(v), 0, cfg.llm.num_hidden_layers)
    tail = h[:, vs + g * (TIME_SLOTS + per) - 1:]  # last visual slot, then the text after <image>
    tail_labels = jnp.concatenate([jnp.full((b, 1), IGNORE_INDEX, labels.dtype), labels[:, vs + 1:]], axis=1)
    return token_ce(llm.head(params["llm"], cfg.llm, tail), tail_labels)
