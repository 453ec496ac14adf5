"""Token cross-entropy shared by every family's training loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

IGNORE_INDEX = -100  # label of tokens that carry no loss


def token_ce(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Shifted CE: logits (B, S, V) predict labels[:, 1:]. Returns (sum of CE fp32, token count)."""
    logits = logits[:, :-1].astype(jnp.float32)
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.where(mask, target, 0)[..., None], axis=-1)[..., 0]
    ce = jnp.where(mask, logz - picked, 0.0)
    return jnp.sum(ce), jnp.sum(mask).astype(jnp.float32)
