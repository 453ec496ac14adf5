"""The training forward, written once against the family protocol: `loss_fn(params, batch, spec)`.

Every family's `loss` returns the *sum* of next-token cross-entropies over labelled tokens and
the number of labelled tokens, so the step can normalise over the whole global batch (all
micro-batches and devices): loss = Σ CE / Σ tokens — independent of mesh and accumulation.

Batch (one micro-batch, host numpy → device arrays):
    input_ids (B, S) int32     prompt + answer tokens; IMAGE_TOKEN_INDEX (-200) marks the video
    labels    (B, S) int32     token ids on answer tokens, IGNORE_INDEX (-100) elsewhere
    valid     (B, S) bool      False on padding
    frames    (B, T, H, W, 3) uint8, frame_valid (B, T) bool   (video objective only)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lvjax.families import family_by_name
from lvjax.families.base import IMAGE_TOKEN_INDEX
from lvjax.losses import IGNORE_INDEX, token_ce  # noqa: F401  (re-exported for the data pipeline)


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """Static description of the forward: family name, model config, compression plan name."""

    family: str
    model_cfg: Any
    compression: str = "none"
    visual_start: int = 0  # index of the <image> placeholder (the same in every row; video objective)


def loss_fn(params, batch: dict, spec: ObjectiveSpec) -> tuple[jax.Array, dict]:
    """(Σ CE over labelled tokens, {'ce_sum', 'tokens'}) for one micro-batch."""
    ce, n = family_by_name(spec.family).loss(params, batch, spec)
    return ce, {"ce_sum": ce, "tokens": n}


def visual_start_of(input_ids) -> int:
    """Column of the <image> placeholder, checked to be the same in every row (host numpy)."""
    ids = np.asarray(input_ids)
    hit = ids == IMAGE_TOKEN_INDEX
    if not np.all(hit.sum(axis=1) == 1):
        raise ValueError("every row of a video batch needs exactly one <image> placeholder")
    cols = np.argmax(hit, axis=1)
    if not np.all(cols == cols[0]):
        raise ValueError(f"<image> placeholder at different columns {sorted(set(cols.tolist()))} in one batch")
    return int(cols[0])


def init_params(spec: ObjectiveSpec, key: jax.Array):
    """Boxed (logically partitioned) random params of the objective's model."""
    return family_by_name(spec.family).init(spec.model_cfg, key)
