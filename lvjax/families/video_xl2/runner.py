"""Video-XL-2's LLM runner: dense or chunk-sparse prefill, then dense or bi-level decoding.

The Qwen2 stack here caches un-rotated keys (`KVCache`) and rotates the cache with positions
0 … capacity−1 at every call, like the original's bi-level tree; with a contiguous cache this
is exactly ordinary decoding (the pure and w_chunk trees). Positions are slot indices:
prefill 0 … L−1; the bi-level suffix mixed_len …; decoding continues from the cache length.

    prefill(params, cfg, x, layout)          → hidden (B, L, D), k, v (layers, B, L, Hkv, D)
    extend(params, cfg, x, cache)            → hidden (B, T, D), cache with the T new rows
    generate(params, x, seen, rng, ...)      → tokens, lengths (and logits when asked)

`params` is the Qwen2 tree (embed_tokens, layers (stacked), norm, lm_head); `layout` a static
block-sparse `Layout` (`lvjax.attention.attend` visits only its non-empty blocks on GPU/TPU,
and applies it as a dense mask on CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lvjax.attention import attend
from lvjax.caches import KVCache
from lvjax.config import LLMConfig
from lvjax.families.video_xl2.bilevel import BilevelPlan
from lvjax.generate import GenerationConfig, choose
from lvjax.models import llm
from lvjax.models.qwen2 import MLP, RMSNorm, apply_rope, rope_cos_sin


def _linear(p: dict, x):
    y = x @ p["kernel"].astype(x.dtype)
    return y + p["bias"].astype(x.dtype) if "bias" in p else y


def _layers(params: dict, cfg: LLMConfig, x, attention, past=()):
    """Scan the decoder layers over x (B, T, D); `attention(q, k, v, *past_l)` gets the un-rotated
    q, k, v (B, T, H, hd) of the new tokens (and layer l's slice of `past`, arrays stacked over
    layers) and returns (B, T, Hq, hd). Returns (x, (k, v)): the new rows stacked over layers."""
    hq, hkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    def norm(p, h):
        return RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype).apply({"params": p}, h)

    def body(x, xs):
        lp, past = xs
        h = norm(lp["input_layernorm"], x)
        a = lp["self_attn"]
        q, k, v = (_linear(a[n], h).reshape(h.shape[:2] + (m, hd))
                   for n, m in (("q_proj", hq), ("k_proj", hkv), ("v_proj", hkv)))
        out = attention(q, k, v, *past)
        x = x + _linear(a["o_proj"], out.reshape(out.shape[:2] + (hq * hd,)))
        x = x + MLP(cfg).apply({"params": lp["mlp"]}, norm(lp["post_attention_layernorm"], x))
        return x, (k, v)

    return jax.lax.scan(body, x, (params["layers"], past))


def prefill(params: dict, cfg: LLMConfig, x, layout):
    """x (B, L, D) at positions 0 … L−1 under `layout` → (hidden before the final norm, k, v)."""
    b, n, _ = x.shape
    cos, sin = rope_cos_sin(jnp.broadcast_to(jnp.arange(n), (b, n)), cfg)

    def attention(q, k, v):
        return attend(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, impl=cfg.attention_impl, layout=layout)

    x, (k, v) = _layers(params, cfg, x, attention)
    return x, k, v


def extend(params: dict, cfg: LLMConfig, x, cache: KVCache):
    """New tokens x (B, T, D) at slots/positions length … length+T−1, attending to the cache and
    causally to each other. Returns (hidden (B, T, D) before the final norm, updated cache)."""
    b, t, _ = x.shape
    slots = jnp.arange(cache.capacity)
    new = cache.length + jnp.arange(t)
    q_cos, q_sin = rope_cos_sin(jnp.broadcast_to(new, (b, t)), cfg)
    k_cos, k_sin = rope_cos_sin(jnp.broadcast_to(slots, (b, cache.capacity)), cfg)
    mask = slots[None, :] <= new[:, None]  # (T, S): the cache and the new tokens up to itself

    def attention(q, k, v, past_k, past_v):
        keys = jax.lax.dynamic_update_slice_in_dim(past_k, k.astype(past_k.dtype), cache.length, axis=1)
        vals = jax.lax.dynamic_update_slice_in_dim(past_v, v.astype(past_v.dtype), cache.length, axis=1)
        return attend(apply_rope(q, q_cos, q_sin), apply_rope(keys, k_cos, k_sin), vals, mask)

    x, (k, v) = _layers(params, cfg, x, attention, (cache.k, cache.v))
    return x, cache.append(k, v)


@functools.partial(jax.jit, static_argnames=("cfg", "gen", "layout", "plan", "suffix_start", "return_logits"))
def generate(params: dict, x, seen, rng, *, cfg: LLMConfig, gen: GenerationConfig, layout,
             plan: BilevelPlan | None, suffix_start: int, return_logits: bool = False):
    """Prefill x (B, L, D) under `layout`, build the bi-level cache when `plan` is given (and
    re-encode the suffix x[:, suffix_start:] on it), then decode `gen.max_new_tokens` tokens.

    Returns (tokens (B, N) int32, lengths (B,), logits) — logits is {} or, with `return_logits`,
    {'suffix': (B, L − suffix_start, V) of the pass that produced step 0, 'steps': (B, N, V)}.
    """
    n = gen.max_new_tokens
    h, k, v = prefill(params, cfg, x, layout)
    if plan is None:
        cache = KVCache.prefilled(k, v, x.shape[1] + n)
        suffix = h[:, suffix_start:]
    else:
        capacity = plan.mixed_len + x.shape[1] - suffix_start + n
        cache = KVCache.prefilled(k, v, k.shape[2]).compact(plan.pieces, capacity)
        suffix, cache = extend(params, cfg, x[:, suffix_start:], cache)
    tokens, lengths, steps = _decode(params, cfg, gen, suffix[:, -1:], cache, seen, rng)
    logits = {"suffix": llm.head(params, cfg, suffix), "steps": steps} if return_logits else {}
    return tokens, lengths, logits


def _decode(params, cfg: LLMConfig, gen: GenerationConfig, last_hidden, cache: KVCache, seen, rng):
    """Greedy/sampled decoding after `cache` (the first token from `last_hidden` (B, 1, D)).
    Returns (tokens (B, N), lengths (B,), raw step logits (B, N, V))."""
    b, n = last_hidden.shape[0], gen.max_new_tokens
    eos = jnp.asarray(gen.eos_token_ids or (-1,), jnp.int32)
    rows = jnp.arange(b)
    logits0 = llm.head(params, cfg, last_hidden)[:, -1]
    rng, key = jax.random.split(rng)
    tok = choose(logits0, seen, gen, key)
    tokens = jnp.full((b, n), gen.pad_token_id, jnp.int32).at[:, 0].set(tok)
    steps = jnp.zeros((b, n, logits0.shape[-1]), jnp.float32).at[:, 0].set(logits0)
    state = (jnp.int32(1), tokens, steps, jnp.isin(tok, eos), seen.at[rows, tok].set(True), cache, rng)

    def cond(state):
        step, _, _, done, *_ = state
        return (step < n) & ~jnp.all(done)

    def body(state):
        step, tokens, steps, done, seen, cache, rng = state
        hidden, cache = extend(params, cfg, llm.embed(params, cfg, tokens[:, step - 1][:, None]), cache)
        logits = llm.head(params, cfg, hidden)[:, -1]
        rng, key = jax.random.split(rng)
        tok = jnp.where(done, gen.pad_token_id, choose(logits, seen, gen, key))
        seen = seen.at[rows, tok].set(seen[rows, tok] | ~done)
        return (step + 1, tokens.at[:, step].set(tok), steps.at[:, step].set(logits), done | jnp.isin(tok, eos),
                seen, cache, rng)

    _, tokens, steps, *_ = jax.lax.while_loop(cond, body, state)
    is_eos = jnp.isin(tokens, eos)
    lengths = jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1) + 1, n)
    return tokens, lengths, steps
