"""Selection rules for in-LLM visual token drops (the callables inside `llm.Drop`).

Each rule is a frozen dataclass (hashable, so a tuple of drops is a static jit argument)
called as rule(hidden (B,S,D), valid (B,S), positions (B,S), query (B,S) bool,
next_layer_params, visual_start, n_visual) → kept indices (B, n_keep) into the visual
block, ascending.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lvjax.attention import attention_probs
from lvjax.config import LLMConfig
from lvjax.models.llm import Drop
from lvjax.models.qwen2 import RMSNorm, causal_mask, scoring_projection


@dataclasses.dataclass(frozen=True)
class KeepStatic:
    """Keep fixed indices (suffix of each group, uniform subset, …): the same for every row."""

    indices: tuple[int, ...]

    def __call__(self, x, valid, positions, query, layer_params, visual_start, n_visual):
        idx = jnp.asarray(self.indices, jnp.int32)
        return jnp.broadcast_to(idx, (x.shape[0], idx.shape[0]))


@dataclasses.dataclass(frozen=True)
class KeepTopAttention:
    """VideoChat-Flash's `attention` rule: the visual tokens the query rows attend to most.

    Uses the *next* layer's input norm, q/k projections and RoPE at the current positions;
    causal fp32 softmax per head, mean over heads and query rows, top-k, sorted by position.
    The query rows lie after the visual block (the question; in training the text before each
    answer), so only rows [visual_start + n_visual, S) are scored: (B, Hq, S − that, S)
    probabilities instead of S×S. Query rows before the end of the visual block are ignored.
    """

    cfg: LLMConfig
    n_keep: int

    def __call__(self, x, valid, positions, query, layer_params, visual_start, n_visual):
        cfg = self.cfg
        h = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype).apply(
            {"params": layer_params["input_layernorm"]}, x
        )
        first = visual_start + n_visual
        q = scoring_projection(layer_params, cfg, h[:, first:], "q_proj", cfg.num_attention_heads, positions[:, first:])
        k = scoring_projection(layer_params, cfg, h, "k_proj", cfg.num_key_value_heads, positions)
        probs = attention_probs(q, k, causal_mask(valid)[:, first:]).mean(axis=1)  # (B, S - first, S)
        visual = jax.lax.dynamic_slice_in_dim(probs, visual_start, n_visual, axis=2)  # (B, S - first, Nv)
        w = query[:, first:].astype(jnp.float32)
        score = jnp.einsum("bs,bsv->bv", w, visual) / jnp.maximum(w.sum(axis=1, keepdims=True), 1.0)
        top = jax.lax.top_k(score, self.n_keep)[1]
        return jnp.sort(top, axis=1).astype(jnp.int32)


def drops_for_plan(plan, cfg: LLMConfig, n_visual: int) -> tuple:
    """The `llm.Drop`s of a `CompressionPlan` for a visual block of `n_visual` tokens (static)."""
    drops = []
    for event in plan.events:
        n_keep = plan.keep_count(event, n_visual)
        if event.rule == "attention":
            select = KeepTopAttention(cfg, n_keep)
        else:
            select = KeepStatic(tuple(int(i) for i in plan.keep_indices(event, n_visual)))
        drops.append(Drop(event.after, n_keep, select))
    return tuple(drops)
