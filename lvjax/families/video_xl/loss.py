"""The Video-XL training loss on the shared batch: CE on the answers with the `step-random` ratio mix.

As the original fine-tuning (`modeling_beacon.Memory`, `finetune_v.sh`: beacon_ratio 2 4 8,
`step-random`): every visual window of every sample draws its compression ratio uniformly from
the configured ratios r with r ≤ w and w % r == 0 (w = the window's raw tokens); the windows run
in order with gradients through the memory (BPTT). The draws come from the row's `rng` key
(derived from the train state's key, split every step), so a resumed run draws the same ratios;
the original's one `default_rng(42)` stream per process is not reproduced.

Per row (vmapped): frames (T, S, S, 3) uint8 → CLIP normalisation → `encode_pixels` (T·tpf, D)
→ windows over the first n_valid = Σ frame_valid · tpf tokens (later windows get no tokens
and no VSTs) → `prefill_video` from the text before <image> → `extend_text` over the text after
<image> → CE on its labels. The label of the first token after <image> is not trained (the
original predicts it from the last visual position; it is the user turn's "\\n", never an answer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lvjax.config import ConfigError
from lvjax.families.video_xl.config import VideoXLConfig
from lvjax.families.video_xl.memory import (
    PAD,
    VST,
    WindowPlan,
    extend_text,
    prefill_video,
)
from lvjax.families.video_xl.vision import encode_pixels
from lvjax.losses import token_ce
from lvjax.models import llm as llm_lib
from lvjax.video.preprocess import normalize


def draw_window_ratios(key: jax.Array, raw: jax.Array, ratios: tuple[int, ...]) -> jax.Array:
    """One ratio per window (n_w,) int32 for raw tokens `raw` (n_w,): a single configured ratio as is;
    several: uniform among r ≤ w with w % r == 0 (`step-random`), one draw per window from `key`.
    A window with no such ratio (or no tokens) takes min(ratios)."""
    if len(ratios) == 1:
        return jnp.full(raw.shape, ratios[0], jnp.int32)
    r = jnp.asarray(ratios, jnp.int32)
    ok = (r[None] <= raw[:, None]) & (raw[:, None] % r[None] == 0)
    pick = jax.random.categorical(key, jnp.where(ok, 0.0, -jnp.inf), axis=-1)
    pick = jnp.where(ok.any(-1), pick, jnp.argmin(r))
    return r[pick]


def window_arrays(raw: jax.Array, ratios: jax.Array, length: int, n_max: int):
    """`WindowPlan.arrays` on the device: raw (n_w,), ratios (n_w,) → src (n_w, length), vst_rows
    (n_w, n_max) (padded with `length`), n_vst (n_w,) int32 — the same layout rule, `rem` carried."""
    slots = jnp.arange(length, dtype=jnp.int32)

    def window(carry, wr):
        rem, start = carry
        w, r = wr
        n = (w + rem) // r
        real = slots < w + n
        is_vst = real & (slots % (r + 1) == r - rem)
        src = jnp.where(is_vst, VST, start + jnp.cumsum(real & ~is_vst) - 1)
        src = jnp.where(real, src, PAD)
        rows = jnp.nonzero(is_vst, size=n_max, fill_value=length)[0].astype(jnp.int32)
        return ((w + rem) % r, start + w), (src.astype(jnp.int32), rows, n.astype(jnp.int32))

    _, out = jax.lax.scan(window, (jnp.int32(0), jnp.int32(0)), (raw.astype(jnp.int32), ratios.astype(jnp.int32)))
    return out


def _row_ce(params, cfg: VideoXLConfig, vs: int, ids, labels, valid, frames, frame_valid, key):
    tpf, window = cfg.tokens_per_frame, cfg.beacon_window
    pre = cfg.preprocess
    pixels = normalize(frames, pre.mean, pre.std, xp=jnp).astype(jnp.dtype(cfg.clip.dtype))
    visual, _ = encode_pixels(params, pixels, cfg=cfg)
    n_tokens = visual.shape[0]
    plan = WindowPlan.build(n_tokens, window, cfg.beacon_ratio, min(cfg.beacon_ratio))
    n_valid = jnp.sum(frame_valid).astype(jnp.int32) * tpf
    raw = jnp.clip(n_valid - jnp.arange(len(plan.raw), dtype=jnp.int32) * window, 0, window)
    src, rows, n_vst = window_arrays(raw, draw_window_ratios(key, raw, cfg.beacon_ratio), plan.length, plan.n_max)
    mem, _ = prefill_video(params["llm"], ids[None, :vs], visual, src, rows, n_vst, cfg=cfg.llm, beacon=cfg.beacon_param)
    text = ids[None, vs + 1:]
    hidden, _ = extend_text(params["llm"], mem, text, jnp.sum(valid[vs + 1:]).astype(jnp.int32), cfg=cfg.llm,
                            beacon=cfg.beacon_param, room=0)
    return token_ce(llm_lib.head(params["llm"], cfg.llm, hidden), labels[None, vs + 1:])


def video_ce(params: dict, batch: dict, spec) -> tuple[jax.Array, jax.Array]:
    """(Σ CE over the answer tokens, count) of a batch (rows vmapped; see the module docstring)."""
    cfg: VideoXLConfig = spec.model_cfg
    frames = batch["frames"]
    if frames.shape[2:4] != cfg.preprocess.crop:
        raise ConfigError(f"video_xl: training frames are {frames.shape[2]}×{frames.shape[3]}, the CLIP crop is "
                          f"{cfg.preprocess.crop[0]}×{cfg.preprocess.crop[1]} (set data.image_size={cfg.preprocess.crop[0]})")
    keys = jax.vmap(jax.random.wrap_key_data)(batch["rng"])
    ce, n = jax.vmap(lambda *row: _row_ce(params, cfg, spec.visual_start, *row))(
        batch["input_ids"], batch["labels"], batch["valid"], frames, batch["frame_valid"], keys)
    return jnp.sum(ce), jnp.sum(n)
