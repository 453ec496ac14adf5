"""QC-Comp: question-conditioned frame selection for long videos (XComp).

For a video of T ≥ `threshold` frames, overlapping chunks of `chunk_frames` frames (stride
`stride`, wrapping around the end, repeated `n_repeat` times with shifted starts) are each
prefilled once (no answer is generated). At every layer, the layer's *input* hidden states
are scored: windows of `window_clips` QC clips (a QC clip = `clip_frames` frames), sliding by
`window_stride` clips, each seen together with the tokens before the video and the text after
it with fresh positions 0..len−1; the head-averaged attention from the question rows (text
rows from `query_bias` on) to each clip's columns is averaged. A clip's score is the mean over
the windows holding it; clips in fewer windows (the chunk edges) get 1e9 and are dropped.
Frame scores are summed over layers [first_layer, last_layer); the top K frames, in temporal
order, are then answered from.

Masking (spec §7.2 point 4): the original scoring pass runs the layer with attention_mask
None, i.e. **not causal** — every question row also sees the question rows after it. That is
the default (`causal=False`, matching the recorded reference); `causal=True` restricts each
row to the columns up to itself.

All windows of a layer are scored in one batched pass: the question copies of the W windows
attend to [prefix, own window, question] — a segment-local layout computed by gathering each
window's keys, never an S×S matrix (cost W·n_q·(P + window + n_t), linear in frames).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.attention import attention_probs
from lvjax.config import LLMConfig
from lvjax.families.base import IMAGE_TOKEN_INDEX
from lvjax.families.videochat_flash import model as vcf
from lvjax.models import llm
from lvjax.models.qwen2 import RMSNorm, scoring_projection
from lvjax.prompt import first_conv_length

EDGE = 1e9  # score of clips not covered by the maximum number of windows


@dataclasses.dataclass(frozen=True)
class QCCompConfig:
    """QC-Comp parameters; defaults are XComp's evaluation settings (`segments_8_4`)."""

    n_select: int = 512  # K frames kept
    n_repeat: int = 2  # d: shifted repeats of the chunk grid
    threshold: int = 1024  # run only for videos of at least this many frames
    stride: int = 512  # chunk stride in frames
    window_clips: int = 8  # a: QC clips per window
    window_stride: int = 4  # b: window stride in clips
    clip_frames: int = 8  # frames per QC clip
    query_bias: int = 27  # question rows start this many tokens after the video
    first_layer: int = 6
    last_layer: int = 24  # exclusive
    causal: bool = False

    @property
    def chunk_frames(self) -> int:
        """Chunk length: stride plus one window stride of context on each side (576 by default)."""
        return self.stride + 2 * self.clip_frames * self.window_stride

    def replace(self, **kw) -> "QCCompConfig":
        return dataclasses.replace(self, **kw)


def chunk_starts(num_frames: int, qc: QCCompConfig) -> list[int]:
    """Start frame of every scoring chunk (the original's shifted, wrapping grid)."""
    rounds = -(-num_frames // qc.stride)
    d = qc.n_repeat
    return [
        (i * qc.stride + (i // rounds) * (qc.clip_frames // d) + (i // rounds) * (qc.stride // d)) % num_frames
        for i in range(d * rounds)
    ]


def chunk_frames(num_frames: int, start: int, qc: QCCompConfig) -> np.ndarray:
    """Frame indices of the chunk starting at `start`, wrapping around the end."""
    return (start + np.arange(qc.chunk_frames)) % num_frames


def layer_clip_scores(
    layer_params: dict,
    cfg: LLMConfig,
    hidden: jax.Array,
    *,
    visual_start: int,
    n_visual: int,
    n_clips: int,
    text_end: int,
    qc: QCCompConfig,
) -> jax.Array:
    """Clip scores (n_clips,) float32 of one layer from its input hidden (S, D) of one sample.

    The visual block is hidden[visual_start : visual_start + n_visual] (n_clips QC clips of equal
    size); the text after it runs to `text_end` (exclusive; the assistant header's <|im_start|>).
    """
    clip_len = n_visual // n_clips
    a, b = qc.window_clips, qc.window_stride
    n_windows = len(range(0, n_clips - a + 1, b))
    if n_windows == 0:
        raise ValueError(f"QC-Comp needs at least {a} clips of {qc.clip_frames} frames; got {n_clips}")
    p_len, w_len = visual_start, a * clip_len
    h = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype).apply(
        {"params": layer_params["input_layernorm"]}, hidden[None]
    )[0]
    prefix, visual, text = h[:p_len], h[p_len : p_len + n_visual], h[p_len + n_visual : text_end]
    n_t = text.shape[0]
    hkv, hq = cfg.num_key_value_heads, cfg.num_attention_heads
    text_pos = p_len + w_len + jnp.arange(n_t)
    k_prefix = scoring_projection(layer_params, cfg, prefix[None], "k_proj", hkv, jnp.arange(p_len)[None])[0]
    k_text = scoring_projection(layer_params, cfg, text[None], "k_proj", hkv, text_pos[None])[0]
    q = scoring_projection(layer_params, cfg, text[None, qc.query_bias :], "q_proj", hq, text_pos[None, qc.query_bias :])
    # Window w holds clips [w·b, w·b + a): gather its tokens, rotate them at positions p_len + [0, w_len).
    starts = np.arange(n_windows) * b * clip_len
    windows = visual[starts[:, None] + np.arange(w_len)[None]]  # (W, w_len, D)
    k_win = scoring_projection(layer_params, cfg, windows, "k_proj", hkv, jnp.broadcast_to(p_len + jnp.arange(w_len), (n_windows, w_len)))
    keys = jnp.concatenate(
        [jnp.broadcast_to(k_prefix, (n_windows,) + k_prefix.shape), k_win, jnp.broadcast_to(k_text, (n_windows,) + k_text.shape)],
        axis=1,
    )
    n_q = q.shape[1]
    mask = None
    if qc.causal:
        cols = jnp.arange(keys.shape[1])
        rows = p_len + w_len + qc.query_bias + jnp.arange(n_q)
        mask = cols[None, :] <= rows[:, None]
    probs = attention_probs(jnp.broadcast_to(q, (n_windows,) + q.shape[1:]), keys, mask).mean(axis=1)  # (W, n_q, S)
    win = probs[:, :, p_len : p_len + w_len].reshape(n_windows, n_q, a, clip_len)
    per_window = win.mean(axis=(1, 3))  # (W, a)
    clip_ids = (np.arange(n_windows) * b)[:, None] + np.arange(a)[None]
    total = jnp.zeros(n_clips, jnp.float32).at[clip_ids].add(per_window)
    count = np.zeros(n_clips, np.int64)
    np.add.at(count, clip_ids, 1)
    mean = total / jnp.maximum(jnp.asarray(count), 1)
    return jnp.where(jnp.asarray(count) < count.max(), EDGE, mean)


def frame_scores(chunk_scores: np.ndarray, starts: list[int], num_frames: int, qc: QCCompConfig) -> np.ndarray:
    """Per-frame score (T,) float64 from per-chunk clip scores (n_chunks, n_layers, n_clips).

    Frame f of a chunk inherits its clip's score; values ≥ 1000 and NaN are dropped; per layer
    the kept values of a frame are averaged over chunks, then summed over the scoring layers.
    """
    chunk_scores = np.asarray(chunk_scores, np.float64)
    n_layers = chunk_scores.shape[1]
    total = np.zeros((n_layers, num_frames))
    count = np.zeros((n_layers, num_frames))
    offsets = np.arange(qc.chunk_frames)
    for scores, start in zip(chunk_scores, starts):
        frames = (start + offsets) % num_frames
        values = scores[:, offsets // qc.clip_frames]  # (L, chunk_frames)
        ok = (values < 1000) & ~np.isnan(values)
        np.add.at(total, (slice(None), frames), np.where(ok, values, 0.0))
        np.add.at(count, (slice(None), frames), ok)
    layers = slice(qc.first_layer, qc.last_layer)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_layer = total[layers] / count[layers]
    return per_layer.sum(axis=0)


def select_frames(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores (ties: lower index first), in temporal order."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i] if scores[i] == scores[i] else np.inf)
    return np.sort(np.asarray(order[:k], np.int64))


@functools.partial(jax.jit, static_argnames=("cfg", "drops", "visual_start", "n_visual", "n_clips", "n_after", "qc"))
def chunk_clip_scores(params: dict, x: jax.Array, *, cfg: LLMConfig, drops: tuple, visual_start: int, n_visual: int,
                      n_clips: int, n_after: int, qc: QCCompConfig) -> jax.Array:
    """Prefill one chunk's prompt x (1, S, D) (no answer) and score its clips at every layer → (L, n_clips).

    `n_after`: text tokens after the video up to the assistant header; `drops` the compression
    of the real forward (the scores are read from each layer's input, as the original does).
    """
    _, _, _, hiddens = llm.prefill(params, cfg, x, jnp.ones(x.shape[:2], bool), drops=drops,
                                   visual_start=visual_start, n_visual=n_visual, return_hidden=True, packed=True)
    n_text = x.shape[1] - n_visual
    scores = []
    for layer, h in enumerate(hiddens):
        nv = h.shape[1] - n_text
        layer_params = llm.layer_params(params, layer)
        scores.append(layer_clip_scores(layer_params, cfg, h[0], visual_start=visual_start, n_visual=nv,
                                        n_clips=n_clips, text_end=visual_start + nv + n_after, qc=qc))
    return jnp.stack(scores)


class ClipCache:
    """Visual tokens per clip (a tuple of source frame indices), so no clip is encoded twice.

    `encode_fn(frames_u8)` → (tokens (n·16, D), ...) encodes whole clips of `clip_len` frames.
    """

    def __init__(self, frames_u8: np.ndarray, encode_fn, clip_len: int, tokens_per_frame: int):
        self.frames, self.encode_fn, self.clip_len, self.tpf = frames_u8, encode_fn, clip_len, tokens_per_frame
        self.clips: dict[tuple[int, ...], jax.Array] = {}
        self.frames_encoded = 0

    def tokens(self, indices: np.ndarray) -> jax.Array:
        """Visual tokens of frames `indices` (padded with the last index to whole clips) → (n·16, D)."""
        idx = [int(i) for i in indices]
        idx += [idx[-1]] * (-len(idx) % self.clip_len)
        clips = [tuple(idx[i:i + self.clip_len]) for i in range(0, len(idx), self.clip_len)]
        missing = list(dict.fromkeys(c for c in clips if c not in self.clips))
        if missing:
            visual = self.encode_fn(self.frames[np.concatenate(missing)])[0]
            per_clip = self.clip_len * self.tpf
            for j, c in enumerate(missing):
                self.clips[c] = visual[j * per_clip:(j + 1) * per_clip]
            self.frames_encoded += len(missing) * self.clip_len
        return jnp.concatenate([self.clips[c] for c in clips])


def select_frames_qc(params: dict, cfg, tokenizer, frames_u8: np.ndarray, prefix: list[int], suffix: list[int],
                     drops_fn, encode_fn, qc: QCCompConfig):
    """QC-Comp on raw frames: score chunks, keep the top K frames, return their visual tokens (K·16, D).

    `encode_fn` encodes frames (the caller's ViT → ToMe → projector); `drops_fn(n_visual)` gives
    the real forward's compression. Each clip is encoded once (chunks overlap; a frame appears in
    another clip only when a chunk starts off the clip grid, as in the original's per-chunk encode).
    """
    t0 = time.perf_counter()
    T = len(frames_u8)
    cache = ClipCache(frames_u8, encode_fn, cfg.local_num_frames, cfg.tokens_per_frame)
    per_clip = qc.clip_frames * cfg.tokens_per_frame
    n_visual = qc.chunk_frames * cfg.tokens_per_frame
    drops = drops_fn(n_visual)
    n_after = first_conv_length(prefix + [IMAGE_TOKEN_INDEX] + suffix, tokenizer) - len(prefix) - 1
    starts = chunk_starts(T, qc)
    ids = np.asarray([prefix + [0] * n_visual + suffix], np.int32)
    scores = []
    for start in starts:
        visual = cache.tokens(chunk_frames(T, start, qc))
        x = vcf.splice(params, cfg, jnp.asarray(ids), visual[None], len(prefix))
        scores.append(np.asarray(chunk_clip_scores(params["llm"], x, cfg=cfg.llm, drops=drops,
                                                   visual_start=len(prefix), n_visual=n_visual,
                                                   n_clips=n_visual // per_clip, n_after=n_after, qc=qc)))
    t1 = time.perf_counter()
    picked = select_frames(frame_scores(np.stack(scores), starts, T, qc), qc.n_select)
    visual = cache.tokens(picked)
    report = {"qc_chunks": len(starts), "qc_selected_frames": picked.tolist(), "qc_frames_encoded": cache.frames_encoded,
              "seconds_qc_scoring": round(t1 - t0, 4), "seconds_qc_encode": round(time.perf_counter() - t1, 4)}
    return visual, report
