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


def _videochat_flash_ce(params, batch, spec):
    """Frames → vision → ToMe → projector → spliced → LLM with the CompressionPlan → CE on answers."""
    from lvjax.models import videochat_flash as vcf

    fn = getattr(vcf, "train_logits", None)
    if fn is None:
        raise NotImplementedError("lvjax.models.videochat_flash has no training forward yet (train_logits)")
    logits, labels = fn(params, batch, cfg=spec.model_cfg, compression=spec.compression)
    return token_ce(logits, labels)


def init_params(spec: ObjectiveSpec, key: jax.Array):
    """Boxed (logically partitioned) random params of the objective's model."""
    from lvjax.families import family_by_name

    return family_by_name(spec.family).init(spec.model_cfg, key)
