"""The model-specific forward of training, in one place: `loss_fn(params, batch, spec) → (loss_sum, metrics)`.

Every objective returns the *sum* of next-token cross-entropies over labelled tokens and the
number of labelled tokens, so the step can normalise over the whole global batch (all
micro-batches and devices): loss = Σ CE / Σ tokens — independent of mesh and accumulation.

Batch (one micro-batch, host numpy → device arrays):
    input_ids (B, S) int32     prompt + answer tokens; IMAGE_TOKEN_INDEX (-200) marks the video
    labels    (B, S) int32     token ids on answer tokens, -100 elsewhere (aligned with input_ids)
    valid     (B, S) bool      False on padding
    frames    (B, T, H, W, 3) uint8, frame_valid (B, T) bool   (video objective only)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

IGNORE_INDEX = -100


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """Static description of the forward: family ('qwen2' | 'videochat_flash'), model config, plan name."""

    family: str
    model_cfg: Any
    compression: str = "none"
    visual_start: int = 0  # index of the <image> placeholder (the same in every row; video objective)


def token_ce(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Shifted CE: logits (B, S, V) predict labels[:, 1:]. Returns (sum of CE fp32, token count)."""
    logits = logits[:, :-1].astype(jnp.float32)
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.where(mask, target, 0)[..., None], axis=-1)[..., 0]
    ce = jnp.where(mask, logz - picked, 0.0)
    return jnp.sum(ce), jnp.sum(mask).astype(jnp.float32)


def _lm_logits(params, batch, spec: ObjectiveSpec):
    from lvjax.models.qwen2 import Qwen2

    ids = jnp.where(batch["input_ids"] < 0, 0, batch["input_ids"])  # text-only: <image> slot → token 0
    return Qwen2(spec.model_cfg).apply({"params": params}, ids, batch["valid"])


def loss_fn(params, batch: dict, spec: ObjectiveSpec) -> tuple[jax.Array, dict]:
    """(Σ CE over labelled tokens, {'ce_sum', 'tokens'}) for one micro-batch."""
    if spec.family == "qwen2":
        ce, n = token_ce(_lm_logits(params, batch, spec), batch["labels"])
    elif spec.family == "videochat_flash":
        ce, n = _videochat_flash_ce(params, batch, spec)
    else:
        raise ValueError(f"unknown family {spec.family!r}")
    return ce, {"ce_sum": ce, "tokens": n}


def normalize_frames(frames: jax.Array, dtype) -> jax.Array:
    """uint8 (..., 3) → (x/255 − mean)/std in float32, cast to the compute dtype (UMTImageProcessor)."""
    from lvjax.video.preprocess import IMAGENET_MEAN, IMAGENET_STD

    x = frames.astype(jnp.float32) * (1.0 / 255.0)
    x = (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
    return x.astype(dtype)


def _videochat_flash_ce(params, batch, spec):
    """Frames → UMT ViT → ToMe → projector → spliced at `visual_start` → LLM with the CompressionPlan → CE.

    Row layout fed to the LLM (static length S − 1 + Tb·16):
        [text before <image>] [Tb·16 visual slots; padded frames' slots invalid] [text after <image>]
    Drops only shrink the visual block, so the answer labels (all after it) keep their order:
    the CE is taken on the text after the visual block, with the head run only there.
    """
    from lvjax.compression import build_plan
    from lvjax.models import llm
    from lvjax.models import videochat_flash as vcf
    from lvjax.models.drops import drops_for_plan

    cfg = spec.model_cfg
    ids, labels, valid = batch["input_ids"], batch["labels"], batch["valid"]
    frames, frame_valid = batch["frames"], batch["frame_valid"]
    b, tb = frames.shape[:2]
    lnf, tpf, vs = cfg.local_num_frames, cfg.tokens_per_frame, spec.visual_start
    clips = normalize_frames(frames, jnp.dtype(cfg.vision.dtype)).reshape((b * tb // lnf, lnf) + frames.shape[2:])
    visual = vcf.merge_and_project(params, cfg, vcf.vision_features(params, cfg, clips))
    n_vis = tb * tpf
    visual = visual.reshape(b, n_vis, -1)
    text = llm.embed(params["llm"], cfg.llm, jnp.where(ids < 0, 0, ids))
    x = jnp.concatenate([text[:, :vs], visual.astype(text.dtype), text[:, vs + 1:]], axis=1)
    v = jnp.concatenate([valid[:, :vs], jnp.repeat(frame_valid, tpf, axis=1), valid[:, vs + 1:]], axis=1)
    plan = build_plan(spec.compression, cfg.llm.num_hidden_layers, tpf)
    drops = drops_for_plan(plan, cfg.llm, n_vis)
    # Attention-scored drops read from the token right before each answer span (as the original trains).
    before_answer = (labels[:, 1:] != IGNORE_INDEX) & (labels[:, :-1] == IGNORE_INDEX)
    query = jnp.concatenate([jnp.zeros((b, vs + n_vis), bool), before_answer[:, vs + 1:],
                             jnp.zeros((b, 1), bool)], axis=1)
    hidden, _, _, _ = llm.prefill(params["llm"], cfg.llm, x, v, drops=drops, visual_start=vs, n_visual=n_vis,
                                  query=query)
    n_last = hidden.shape[1] - (ids.shape[1] - 1)
    tail = hidden[:, vs + n_last - 1:]  # last visual slot, then the text after <image>
    tail_labels = jnp.concatenate([jnp.full((b, 1), IGNORE_INDEX, labels.dtype), labels[:, vs + 1:]], axis=1)
    return token_ce(llm.head(params["llm"], cfg.llm, tail), tail_labels)


def visual_start_of(input_ids) -> int:
    """Column of the <image> placeholder, checked to be the same in every row (host numpy)."""
    import numpy as np

    ids = np.asarray(input_ids)
    hit = ids == -200
    if not np.all(hit.sum(axis=1) == 1):
        raise ValueError("every row of a video batch needs exactly one <image> placeholder")
    cols = np.argmax(hit, axis=1)
    if not np.all(cols == cols[0]):
        raise ValueError(f"<image> placeholder at different columns {sorted(set(cols.tolist()))} in one batch")
    return int(cols[0])


def init_params(spec: ObjectiveSpec, key: jax.Array):
    """Boxed (logically partitioned) random params of the objective's model."""
    from lvjax.families import family_by_name

    return family_by_name(spec.family).init(spec.model_cfg, key)
