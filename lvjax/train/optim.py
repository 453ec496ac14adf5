"""Optax pieces: warmup + decay schedule, AdamW with clipping, and frozen subtrees by mask.

Frozen parameters get `optax.set_to_zero()` inside `optax.multi_transform` (no Adam state is
allocated for them), their gradients are cut with `stop_gradient` in the loss, and the step
returns their input buffers unchanged — so they stay bit-identical.
"""

from __future__ import annotations

import fnmatch

import jax
import optax

from lvjax.train.config import OptimSection

TRAIN, FROZEN = "trainable", "frozen"


def make_schedule(opt: OptimSection, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 over ceil(warmup_ratio · steps) steps, then cosine/linear/constant.

    Matches HF Trainer's `get_cosine_schedule_with_warmup` (decays to min_lr_ratio · lr).
    """
    warmup = int(-(-opt.warmup_ratio * total_steps // 1))
    decay_steps = max(total_steps - warmup, 1)
    end = opt.lr * opt.min_lr_ratio
    if opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(opt.lr, decay_steps, alpha=opt.min_lr_ratio)
    elif opt.schedule == "linear":
        decay = optax.linear_schedule(opt.lr, end, decay_steps)
    else:
        decay = optax.constant_schedule(opt.lr)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, opt.lr, warmup), decay], [warmup])


def param_paths(tree) -> dict:
    """Leaf path strings ('llm/layers/mlp/up_proj/kernel') in a tree with the same structure."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), tree
    )


def frozen_labels(params, patterns) -> dict:
    """Tree of 'trainable'/'frozen' labels: a leaf is frozen if its path or a prefix matches a pattern."""

    def label(path: str) -> str:
        for pat in patterns:
            if fnmatch.fnmatchcase(path, pat) or path.startswith(pat.rstrip("/*") + "/") or path == pat:
                return FROZEN
        return TRAIN

    return jax.tree.map(label, param_paths(params))


def make_optimizer(opt: OptimSection, total_steps: int, labels) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (+ global-norm clipping over the trainable grads) for trainable leaves, zero for frozen."""
    schedule = make_schedule(opt, total_steps)
    parts = []
    if opt.grad_clip:
        parts.append(optax.clip_by_global_norm(opt.grad_clip))
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay))
    tx = optax.multi_transform({TRAIN: optax.chain(*parts), FROZEN: optax.set_to_zero()}, labels)
    return tx, schedule


def apply_updates(params, updates, labels):
    """params + updates on trainable leaves; frozen leaves are returned as they came in."""
    return jax.tree.map(
        lambda p, u, l: p if l == FROZEN else (p + u.astype(p.dtype)).astype(p.dtype), params, updates, labels
    )


def count(params, labels) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    n = {TRAIN: 0, FROZEN: 0}
    for p, l in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
        n[l] += int(p.size)
    return n[TRAIN], n[FROZEN]
