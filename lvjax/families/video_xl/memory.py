"""The Video-XL LLM: Qwen2 with visual summarization tokens (VSTs, "beacons") and a window memory.

The original (`modeling_beacon.Memory` + `llava_qwen`) runs the expanded prompt in *steps*:

    step 0          the prefix before the video ([0, skip_first)), plain tokens
    visual windows  `beacon_window` raw visual tokens each (the last cut at the end of the video),
                    with one VST after every r raw tokens (ratio r per window)
    text            everything after the video, then one step per generated token

Each step attends (causally, `full-coverage`) to [memory | the step]. Keys and values are
kept **before RoPE**; at every step keys get positions arange(mem_len + L) and queries the last
L of them, so memory slot s is always at position s and a step row j at mem_len + j. After a
visual window only its VST rows' K/V join the memory; prefix and text rows all do. VST rows
use the `beacon_{q,k,v}_proj` weights (`qwen2.Attention.project`), everything else is shared.

Here every step is one call of `run_step` on a fixed-size memory (a stacked `lvjax.caches.KVCache`,
slot = position, `length` slots filled): it appends the step rows listed in `keep` at `length`. The visual
windows run as one `lax.scan` over windows padded to one static length (see `WindowPlan`), so
memory and compile time do not grow with the number of windows beyond the summaries kept.
The ratio of each window is data, so `step-random` mixes compile once. Attention reads the
memory MEMORY_CHUNK slots at a time with one online softmax (`memory_attention`), skipping the
chunks past its length: no (L, memory) score matrix is ever held.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvjax.caches import KVCache
from lvjax.config import LLMConfig
from lvjax.generate import GenerationConfig, choose
from lvjax.models import llm as llm_lib
from lvjax.models.qwen2 import ACT, KV_AXES, MLP, Q_AXES, Attention, Qwen2, RMSNorm, apply_rope, rope_cos_sin
from lvjax.models.stack import scanned

P = nn.with_logical_partitioning
MEMORY_CHUNK = 128  # memory slots read per attention block; buffer sizes are multiples of it
_NEG = -0.7 * float(np.finfo(np.float32).max)
VST = -1  # `WindowPlan.src` code of a VST slot
PAD = -2  # … of a padding slot


# ----------------------------------------------------------------------------- host-side layout


def draw_ratios(ratios: tuple[int, ...], raw: list[int], rng: np.random.Generator | None) -> tuple[int, ...]:
    """One ratio per visual window of `raw[i]` raw tokens, as `Memory.set_compression_ratio`.

    A single configured ratio is used as is. Several: `step-random`, `rng.choice(valid)` per window
    with valid = the ratios r ≤ w with w % r == 0. `rng` (numpy Generator; the original's is
    `default_rng(42)` made once per Memory object) advances by one draw per window.
    """
    if len(ratios) == 1:
        return tuple(int(ratios[0]) for _ in raw)
    if rng is None:
        raise ValueError("several beacon ratios need a random generator (ratio_rng)")
    out = []
    for w in raw:
        valid = [r for r in ratios if r <= w and w % r == 0]
        if not valid:
            raise ValueError(f"no beacon ratio among {ratios} divides a window of {w} tokens")
        out.append(int(rng.choice(valid)))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """The visual windows of one video: raw tokens and ratio per window, padded to static shapes.

    Window i holds w = raw[i] raw tokens and n = (w + rem)//r VSTs; slot j of its w + n inputs is
    a VST iff j % (r+1) == r - rem (`rem` carries (w + rem) % r to the next window; 0 when r | w).
    Arrays (n_windows rows, each padded to `length` slots / `n_max` VSTs):
      src (n_w, length) int32: visual token index, VST (-1) or PAD (-2) per slot;
      vst_rows (n_w, n_max) int32: the VST slots, padded with `length` (no row);
      n_vst (n_w,) int32.
    """

    raw: tuple[int, ...]
    ratios: tuple[int, ...]
    length: int
    n_max: int

    @classmethod
    def build(cls, n_visual: int, window: int, ratios: tuple[int, ...], min_ratio: int) -> "WindowPlan":
        """Windows of `window` raw tokens over `n_visual` tokens; `min_ratio` fixes the padded sizes."""
        raw = tuple(min(window, n_visual - s) for s in range(0, n_visual, window))
        n_max = -(-window // min_ratio)
        return cls(raw, tuple(ratios), window + n_max, n_max)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_w = len(self.raw)
        src = np.full((n_w, self.length), PAD, np.int32)
        rows = np.full((n_w, self.n_max), self.length, np.int32)
        n_vst = np.zeros(n_w, np.int32)
        rem, start = 0, 0
        for i, (w, r) in enumerate(zip(self.raw, self.ratios)):
            n = (w + rem) // r
            slots = np.arange(w + n)
            is_vst = slots % (r + 1) == r - rem
            src[i, : w + n] = np.where(is_vst, VST, start + np.cumsum(~is_vst) - 1)
            rows[i, :n] = slots[is_vst]
            n_vst[i] = n
            rem, start = (w + rem) % r, start + w
        return src, rows, n_vst


# ----------------------------------------------------------------------------- the memory buffer


def empty_memory(cfg: LLMConfig, batch: int, size: int) -> KVCache:
    """Pre-RoPE keys/values (layers, B, M, Hkv, hd), M = `size` rounded up to a multiple of
    MEMORY_CHUNK, none filled; slot = RoPE position."""
    shape = (cfg.num_hidden_layers, batch, _round(size), cfg.num_key_value_heads, cfg.head_dim)
    z = jnp.zeros(shape, jnp.dtype(cfg.dtype))
    return KVCache(z, z, jnp.int32(0))


def _round(size: int) -> int:
    return -(-size // MEMORY_CHUNK) * MEMORY_CHUNK


# ----------------------------------------------------------------------------- modules


class BeaconLayer(nn.Module):
    """A Qwen2 decoder layer attending over [memory | step]; VST rows use the beacon projections.

    Scan body: (x (B, L, D), (mem_k, mem_v) of this layer, memory length, rope of the step,
    step mask (B, L, L), vst_rows (B, n) or None) → (x, pre-RoPE (k, v) of the step rows).
    Under a `sequence` mesh axis the step's rows are split (as Qwen2's layers): each device
    attends its own query rows to the whole memory and the all-gathered step keys.
    """

    cfg: LLMConfig
    beacon: tuple[str, ...]

    @nn.compact
    def __call__(self, x, mem, length, rope_step, step_mask, vst_rows):
        cfg = self.cfg
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype, name=name)  # noqa: E731
        attn = Attention(cfg, beacon=self.beacon, name="self_attn")
        x = nn.with_logical_constraint(x, ACT)
        q, k, v = attn.project(norm("input_layernorm")(x), vst_rows)
        q = nn.with_logical_constraint(apply_rope(q, *rope_step), Q_AXES)
        k, v = (nn.with_logical_constraint(a, KV_AXES) for a in (k, v))
        out = memory_attention(q, apply_rope(k, *rope_step), v, step_mask, mem, length, cfg)
        b, t = x.shape[:2]
        x = x + attn.o_proj(out.reshape(b, t, -1))
        x = x + MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
        return x, (k, v)


def memory_attention(q, k, v, step_mask, mem, length, cfg: LLMConfig):
    """softmax over [memory slots < length | step keys allowed by step_mask] in one online softmax.

    q, k: the step's rotated queries (B, L, Hq, hd) / keys (B, L, Hkv, hd); v (B, L, Hkv, hd);
    mem: pre-RoPE (k, v) (B, M, Hkv, hd), M a multiple of MEMORY_CHUNK. The memory is read
    MEMORY_CHUNK slots at a time (rotated at positions = slots), and chunks past `length` are
    skipped, so the scores held at once are (L, MEMORY_CHUNK) whatever the memory size.
    Returns (B, L, Hq, hd) in q's dtype.
    """
    b, t, hq, hd = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, hq // hkv, hd) * jnp.asarray(hd**-0.5, q.dtype)

    def scores(keys, allowed):  # (B, S, Hkv, hd), (B|1, L, S) → masked fp32 (B, Hkv, G, L, S)
        s = jnp.einsum("btkgd,bskd->bkgts", qg, keys, preferred_element_type=jnp.float32)
        return jnp.where(allowed[:, None, None], s, _NEG)

    def accumulate(stats, s, allowed, values):
        m, total, acc = stats
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.where(allowed[:, None, None], jnp.exp(s - m_new[..., None]), 0.0)
        fix = jnp.exp(m - m_new)
        acc = acc * fix[..., None] + jnp.einsum("bkgts,bskd->bkgtd", p.astype(values.dtype), values,
                                                preferred_element_type=jnp.float32)
        return m_new, total * fix + p.sum(-1), acc

    shape = (b, hkv, hq // hkv, t)
    stats = (jnp.full(shape, _NEG, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.zeros(shape + (hd,), jnp.float32))
    stats = accumulate(stats, scores(k, step_mask), step_mask, v)

    def chunk(stats, start):
        def read(stats):
            slots = start + jnp.arange(MEMORY_CHUNK)
            kc, vc = (jax.lax.dynamic_slice_in_dim(a, start, MEMORY_CHUNK, axis=1) for a in mem)
            kc = apply_rope(kc, *rope_cos_sin(slots[None], cfg))
            allowed = jnp.broadcast_to(slots < length, (1, t, MEMORY_CHUNK))
            return accumulate(stats, scores(kc, allowed), allowed, vc)

        return jax.lax.cond(start < length, read, lambda s: s, stats), None

    (_, total, acc), _ = jax.lax.scan(chunk, stats, jnp.arange(0, mem[0].shape[1], MEMORY_CHUNK))
    out = acc / jnp.where(total > 0, total, 1.0)[..., None]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, hq, hd).astype(q.dtype)


def _stack(cfg: LLMConfig, beacon: tuple[str, ...]) -> nn.Module:
    in_axes = (0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast)
    return scanned(BeaconLayer, cfg.num_hidden_layers, cfg.remat_policy, in_axes)(cfg, beacon, name="layers")


def init_llm(cfg: LLMConfig, beacon: tuple[str, ...], key: jax.Array) -> dict:
    """Boxed params: Qwen2's embed_tokens / norm / lm_head, beacon layers, `beacon_embed_tokens` (1, D)."""
    k1, k2, k3 = jax.random.split(key, 3)
    base = Qwen2(cfg).init(k1, jnp.zeros((1, 1), jnp.int32))["params"]
    x = jnp.zeros((1, 1, cfg.hidden_size), jnp.dtype(cfg.dtype))
    mem = empty_memory(cfg, 1, 1)
    rope = rope_cos_sin(jnp.zeros((1, 1), jnp.int32), cfg)
    layers = _stack(cfg, beacon).init(k2, x, (mem.k, mem.v), mem.length, rope, jnp.ones((1, 1, 1), bool),
                                      jnp.zeros((1, 1), jnp.int32))["params"]
    embed = nn.Embed(1, cfg.hidden_size, param_dtype=jnp.dtype(cfg.param_dtype),
                     embedding_init=P(nn.initializers.normal(0.02), (None, "embed")))
    return {**base, "layers": layers, "beacon_embed_tokens": embed.init(k3, jnp.zeros((1,), jnp.int32))["params"]}


# ----------------------------------------------------------------------------- steps


def run_step(params: dict, cfg: LLMConfig, beacon: tuple[str, ...], mem: KVCache, x: jax.Array, valid: jax.Array,
             keep: jax.Array, n_keep, vst_rows: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
    """One step: x (B, L, D) at positions length + arange(L) over [memory | step], then append.

    valid (B, L): real rows (padding is never attended to). keep (m,) int: the step rows whose
    K/V are appended at `length` (indices ≥ L are padding); `n_keep` of them count. The buffer
    needs m free slots. Returns (hidden (B, L, D) before the final norm, the new memory).
    """
    t = x.shape[1]
    rope_step = rope_cos_sin((mem.length + jnp.arange(t))[None], cfg)
    causal = jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]
    x, (k, v) = _stack(cfg, beacon).apply({"params": params["layers"]}, x, (mem.k, mem.v), mem.length, rope_step, causal,
                                          vst_rows)
    keep = jnp.minimum(keep, t - 1)
    return x, mem.append(jnp.take(k, keep, axis=2), jnp.take(v, keep, axis=2), n=n_keep)


def window_embeds(params: dict, features: jax.Array, src: jax.Array) -> jax.Array:
    """Step inputs of windows src (..., L): visual tokens features (N, D) in order, VSTs = beacon_embed_tokens[0]."""
    vst = params["beacon_embed_tokens"]["embedding"][0].astype(features.dtype)
    picked = jnp.take(features, jnp.maximum(src, 0), axis=0)
    return jnp.where((src == VST)[..., None], vst, picked)


@functools.partial(jax.jit, static_argnames=("cfg", "beacon"))
def prefill_video(params: dict, prefix_ids: jax.Array, features: jax.Array, src: jax.Array, vst_rows: jax.Array,
                  n_vst: jax.Array, *, cfg: LLMConfig, beacon: tuple[str, ...]) -> tuple[KVCache, jax.Array]:
    """The prompt up to the end of the video → memory [sink | VSTs].

    prefix_ids (1, S0): tokens before `<image>`; features (N, D) visual tokens; src, vst_rows,
    n_vst: `WindowPlan.arrays()`. The buffer has S0 + n_windows·n_max slots. Returns (memory,
    memory length seen by each window (n_windows,)).
    """
    s0 = prefix_ids.shape[1]
    mem = empty_memory(cfg, 1, s0 + src.shape[0] * vst_rows.shape[1])
    x = llm_lib.embed(params, cfg, prefix_ids)
    _, mem = run_step(params, cfg, beacon, mem, x, jnp.ones((1, s0), bool), jnp.arange(s0), s0)

    def window(mem, w):
        src_w, rows_w, n_w = w
        x = window_embeds(params, features, src_w)[None]
        _, new = run_step(params, cfg, beacon, mem, x, (src_w != PAD)[None], rows_w, n_w, rows_w[None])
        return new, mem.length

    return jax.lax.scan(window, mem, (src, vst_rows, n_vst))


@functools.partial(jax.jit, static_argnames=("cfg", "beacon", "room"))
def extend_text(params: dict, mem: KVCache, ids: jax.Array, n: jax.Array, *, cfg: LLMConfig, beacon: tuple[str, ...],
                room: int) -> tuple[jax.Array, KVCache]:
    """Text after the video, ids (1, T) of which the first `n` are real, in one step (the original's
    chunks of ≤ beacon_window rows compute the same function: each chunk's raw K/V joins the memory).

    The memory gets T + `room` free slots. Returns (hidden (1, T, D) before the final norm, memory).
    """
    t = ids.shape[1]
    x = llm_lib.embed(params, cfg, ids)
    return run_step(params, cfg, beacon, mem.grown(_round(mem.capacity + t + room)), x, (jnp.arange(t) < n)[None], jnp.arange(t), n)


@functools.partial(jax.jit, static_argnames=("cfg", "beacon", "gen", "keep_logits"))
def decode(params: dict, mem: KVCache, last_hidden: jax.Array, seen: jax.Array, rng: jax.Array, *, cfg: LLMConfig,
           beacon: tuple[str, ...], gen: GenerationConfig, keep_logits: bool = False):
    """Pick from last_hidden (1, D), then one step per token (position = memory length) in a while_loop.

    seen (1, V) bool: tokens the repetition penalty starts from. Returns (tokens (N,), number
    generated, memory length at each step (N,), raw logits (N, V) or None).
    """
    n = gen.max_new_tokens
    eos = jnp.asarray(gen.eos_token_ids or (-1,), jnp.int32)
    logits0 = llm_lib.head(params, cfg, last_hidden[:, None])[:, -1]
    rng, key = jax.random.split(rng)
    tok = choose(logits0, seen, gen, key)[0]
    tokens = jnp.full((n,), gen.pad_token_id, jnp.int32).at[0].set(tok)
    logits = jnp.zeros((n, logits0.shape[-1]) if keep_logits else (0,), jnp.float32)
    logits = logits.at[0].set(logits0[0]) if keep_logits else logits
    lengths = jnp.zeros((n,), jnp.int32).at[0].set(mem.length)
    state = (jnp.int32(1), tokens, jnp.isin(tok, eos), seen.at[0, tok].set(True), mem, rng, logits, lengths)

    def cond(s):
        return (s[0] < n) & ~s[2]

    def body(s):
        step, tokens, done, seen, mem, rng, logits, lengths = s
        lengths = lengths.at[step].set(mem.length)
        x = llm_lib.embed(params, cfg, tokens[step - 1][None, None])
        h, mem = run_step(params, cfg, beacon, mem, x, jnp.ones((1, 1), bool), jnp.arange(1), 1)
        out = llm_lib.head(params, cfg, h)[:, -1]
        rng, key = jax.random.split(rng)
        tok = choose(out, seen, gen, key)[0]
        if keep_logits:
            logits = logits.at[step].set(out[0])
        return (step + 1, tokens.at[step].set(tok), jnp.isin(tok, eos), seen.at[0, tok].set(True), mem, rng, logits,
                lengths)

    step, tokens, _, _, _, _, logits, lengths = jax.lax.while_loop(cond, body, state)
    return tokens, step, lengths, (logits if keep_logits else None)
