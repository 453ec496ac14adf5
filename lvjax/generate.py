"""Jitted generation: prefill into preallocated KV caches, then a `lax.while_loop` decode.

Logits processing follows transformers' order: repetition penalty, then (sampling only)
temperature, top-k and top-p. Finished rows emit `pad_token_id`, like transformers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import LLMConfig
from lvjax.models import llm


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Decoding options (a static jit argument). Defaults: greedy, no penalty."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0

    def replace(self, **kw) -> "GenerationConfig":
        kw = {k: v for k, v in kw.items() if v is not None}
        if "eos_token_ids" in kw:
            kw["eos_token_ids"] = tuple(kw["eos_token_ids"])
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_hf(cls, gen: dict, llm_cfg: LLMConfig | None = None) -> "GenerationConfig":
        """From a `generation_config.json` dict (Qwen's: sampling, T 0.7, top-p 0.8, top-k 20, penalty 1.1)."""
        eos = gen.get("eos_token_id", llm_cfg.eos_token_id if llm_cfg else ())
        eos = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))
        pad = gen.get("pad_token_id")
        return cls(
            do_sample=bool(gen.get("do_sample", False)),
            temperature=float(gen.get("temperature") or 1.0),
            top_p=float(gen.get("top_p") or 1.0),
            top_k=int(gen.get("top_k") or 0),
            repetition_penalty=float(gen.get("repetition_penalty") or 1.0),
            eos_token_ids=eos,
            pad_token_id=int(pad if pad is not None else (eos[0] if eos else 0)),
        )


def process_logits(logits: jax.Array, seen: jax.Array, gen: GenerationConfig) -> jax.Array:
    """Repetition penalty on `seen` tokens (B, V) bool, then temperature/top-k/top-p when sampling."""
    logits = logits.astype(jnp.float32)
    if gen.repetition_penalty != 1.0:
        p = gen.repetition_penalty
        logits = jnp.where(seen, jnp.where(logits < 0, logits * p, logits / p), logits)
    if not gen.do_sample:
        return logits
    if gen.temperature != 1.0:
        logits = logits / gen.temperature
    neg = -jnp.inf
    if gen.top_k > 0:
        kth = jax.lax.top_k(logits, min(gen.top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if gen.top_p < 1.0:
        order = jnp.argsort(logits, axis=-1)  # ascending
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove = cum <= 1.0 - gen.top_p
        remove = remove.at[..., -1].set(False)  # keep at least one token
        mask = jnp.zeros_like(remove).at[jnp.arange(logits.shape[0])[:, None], order].set(remove)
        logits = jnp.where(mask, neg, logits)
    return logits


def choose(logits: jax.Array, seen: jax.Array, gen: GenerationConfig, rng: jax.Array) -> jax.Array:
    """Next token ids (B,) from raw logits (B, V)."""
    logits = process_logits(logits, seen, gen)
    if gen.do_sample:
        return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _decode(params, cfg: LLMConfig, gen: GenerationConfig, last_hidden, caches, seen, rng):
    """Pick the first token from `last_hidden` (B, 1, D), then decode with a `lax.while_loop`,
    each step appending to the stage caches. Returns (tokens (B, N), lengths (B,)).
    """
    b = last_hidden.shape[0]
    n = gen.max_new_tokens
    eos = jnp.asarray(gen.eos_token_ids or (-1,), jnp.int32)
    rows = jnp.arange(b)

    def pick(hidden, seen, key):
        return choose(llm.head(params, cfg, hidden)[:, -1], seen, gen, key)

    rng, key = jax.random.split(rng)
    tok = pick(last_hidden, seen, key)
    tokens = jnp.full((b, n), gen.pad_token_id, jnp.int32).at[:, 0].set(tok)
    done = jnp.isin(tok, eos)
    seen = seen.at[rows, tok].set(True)

    def cond(state):
        step, _, done, *_ = state
        return (step < n) & ~jnp.all(done)

    def body(state):
        step, tokens, done, seen, caches, rng = state
        prev = tokens[:, step - 1][:, None]
        x = llm.embed(params, cfg, prev)
        hidden, caches = llm.extend(params, cfg, x, jnp.ones((b, 1), bool), caches)
        rng, key = jax.random.split(rng)
        tok = jnp.where(done, gen.pad_token_id, pick(hidden, seen, key))
        tokens = tokens.at[:, step].set(tok)
        seen = seen.at[rows, tok].set(seen[rows, tok] | ~done)
        done = done | jnp.isin(tok, eos)
        return step + 1, tokens, done, seen, caches, rng

    _, tokens, *_ = jax.lax.while_loop(cond, body, (jnp.int32(1), tokens, done, seen, caches, rng))
    is_eos = jnp.isin(tokens, eos)
    lengths = jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1) + 1, n)
    return tokens, lengths


def _last_hidden(h: jax.Array, valid: jax.Array) -> jax.Array:
    """The hidden (B, 1, D) at each row's last valid slot of h (B, S, D), `valid` (B, S)."""
    return jnp.take_along_axis(h, llm.last_valid(valid)[:, None, None], axis=1)


@functools.partial(jax.jit, static_argnames=("cfg", "gen", "drops", "visual_start", "n_visual", "packed"))
def generate_from_embeds(
    params: dict,
    x: jax.Array,
    valid: jax.Array,
    seen: jax.Array,
    rng: jax.Array,
    *,
    cfg: LLMConfig,
    gen: GenerationConfig,
    drops: tuple = (),
    visual_start: int = 0,
    n_visual: int = 0,
    packed: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Generate from prompt embeddings x (B, T, D) whose last valid slot holds each row's last token.

    valid (B, T) marks real prompt slots; seen (B, V) bool the tokens the repetition penalty
    starts from; `packed`: every row's padding lies behind its tokens (see `llm.prefill`), which
    lets a long prompt use the blockwise / kernel attention. Returns (tokens (B, max_new_tokens)
    int32, number generated per row (B,)).
    """
    h, h_valid, caches, _ = llm.prefill(
        params, cfg, x, valid, drops=drops, visual_start=visual_start, n_visual=n_visual, max_new=gen.max_new_tokens,
        packed=packed,
    )
    return _decode(params, cfg, gen, _last_hidden(h, h_valid), caches, seen, rng)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "drops", "visual_start", "n_visual", "packed"))
def prefill_cache(params, x, valid, *, cfg: LLMConfig, max_new: int, drops: tuple = (), visual_start: int = 0,
                  n_visual: int = 0, packed: bool = False):
    """Prefill x (B, T, D) into caches with `max_new` free slots. Returns (hidden (B, 1, D) at each
    row's last valid slot, caches).

    `packed`: every row's padding lies behind its tokens (see `llm.prefill`), enabling the
    attention kernels with one compile for any amount of padding.
    """
    h, h_valid, caches, _ = llm.prefill(
        params, cfg, x, valid, drops=drops, visual_start=visual_start, n_visual=n_visual, max_new=max_new,
        packed=packed,
    )
    return _last_hidden(h, h_valid), caches


@functools.partial(jax.jit, static_argnames=("cfg",))
def extend_cache(params, caches, x, valid, *, cfg: LLMConfig):
    """Append prompt tokens x (B, T, D) (`valid` (B, T)) to the caches. Returns (last hidden, caches)."""
    h, caches = llm.extend(params, cfg, x, valid, caches)
    return h[:, -1:], caches


@functools.partial(jax.jit, static_argnames=("cfg", "gen"))
def decode_from_cache(params, last_hidden, caches, seen, rng, *, cfg: LLMConfig, gen: GenerationConfig):
    """Generate after prefilled (and extended) caches. Returns (tokens, lengths)."""
    return _decode(params, cfg, gen, last_hidden, caches, seen, rng)


def right_align(ids: np.ndarray, mask: np.ndarray, length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-lay rows (padded on either side) right-aligned into (B, length): last token in the last slot."""
    b = ids.shape[0]
    out = np.full((b, length), pad_id, np.int32)
    valid = np.zeros((b, length), bool)
    for i in range(b):
        row = ids[i][mask[i].astype(bool)]
        if len(row) == 0:
            raise ValueError(f"prompt {i} is empty (attention_mask has no 1s)")
        out[i, length - len(row):] = row
        valid[i, length - len(row):] = True
    return out, valid


def bucket(n: int, minimum: int = 16) -> int:
    """Smallest bucket ≥ n: powers of two up to 4096, then multiples of 4096."""
    size = minimum
    while size < n and size < 4096:
        size *= 2
    return size if size >= n else -(-n // 4096) * 4096


def seen_from_ids(ids: np.ndarray, valid: np.ndarray, vocab: int) -> np.ndarray:
    """(B, V) bool: which token ids occur in each row's valid slots."""
    seen = np.zeros((ids.shape[0], vocab), bool)
    for i in range(ids.shape[0]):
        seen[i, ids[i][valid[i]]] = True
    return seen


def sample_rng(seed: Any) -> jax.Array:
    return jax.random.key(0 if seed is None else int(seed))
