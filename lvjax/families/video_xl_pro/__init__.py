"""Video-XL-Pro: SigLIP → DTS (ReCoT) → mlp2x_gelu → pool, timestamps per group, the query-aware selector,
then a plain causal Qwen2 (dense prefill + decode).

Flow of `answer_encoded` (see models/dts_frontend.py and selector.py for the pieces):

    time ids   `Time {t:06.1f}s:` + 144 × <|vision_pad|> per group, t = timestamps[::4] of the unpadded frames
    visual seq embed(time ids) with the pad rows = pooled tokens                  (G·154, D)
    selector   scores → feature rotary + score → top-k visual rows + all time rows (G·10 + k, D)
    splice     embed(prompt before <image>) | kept rows | embed(prompt after)      positions 0..L−1
    LLM        `generate.generate_from_embeds` (greedy or sampled), only new ids, as `generate(inputs_embeds=…)`

Randomness the original draws per call is an option here: `keep_rate` (default `random.Random(seed)
.uniform(0.7, 0.99)`, Python's generator, so a seed reproduces the original's draw after `random.seed`)
and, at encode time, `pad_repeat_counts` (default drawn with NumPy from `pad_seed`; the original's
`torch.randperm` cannot be reproduced). The repetition penalty starts from no seen tokens, as
transformers' `generate(inputs_embeds=…)` (it has no prompt ids).

Training (`loss.py`): the same path on the shared batch, the frame duplication and the keep rate drawn
per row from its key, dropped rows masked instead of removed.

Parameter tree: {"vision_tower", "sae", "mm_projector"} (front end), "text_mlp",
"WindowTimeToTokenAttention" (selector), "llm" (Qwen2).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import ConfigError, LLMConfig
from lvjax.convert.llm import llm_rules
from lvjax.convert.table import IDENTITY, LINEAR, Rule
from lvjax.families.base import Encoded, Family, Sampling, TrainingMedia
from lvjax.families.registry import register
from lvjax.families.video_xl_pro.config import VISION_PAD_TOKEN, VideoXLProConfig
from lvjax.families.video_xl_pro.loss import video_ce
from lvjax.families.video_xl_pro.selector import (
    GROUP_SIZE,
    SELECTOR_KEYS,
    TIME_TOKENS,
    Selector,
    draw_keep_rate,
    feature_rotary,
    num_kept,
    select,
    visual_slots,
)
from lvjax.generate import GenerationConfig, generate_from_embeds, sample_rng
from lvjax.models import dts_frontend as fe
from lvjax.models import llm
from lvjax.models.qwen2 import Qwen2
from lvjax.prompt import IMAGE_TOKEN_INDEX, build_prompt, tokenize_with_image
from lvjax.video.sampling import rounded_timestamps


def time_ids_for(tokenizer: Any, timestamps: Sequence[float]) -> tuple[np.ndarray, int]:
    """(time_embedding ids (G·154,), vision_pad id) for frame seconds (`VideoFrames.timestamps`, unpadded)."""
    pad = tokenizer.convert_tokens_to_ids(VISION_PAD_TOKEN)
    if pad is None or pad == getattr(tokenizer, "unk_token_id", None):
        raise ConfigError(f"the tokenizer has no {VISION_PAD_TOKEN} token (Video-XL-Pro marks visual slots with it)")
    ids = fe.time_prompt_ids(tokenizer, rounded_timestamps(timestamps), fe.PRO_TIME_FORMAT, pad)
    return ids, int(pad)


@functools.partial(jax.jit, static_argnames=("cfg", "k", "image_index"))
def _prepare(params, pooled, time_ids, ids, *, cfg: VideoXLProConfig, k: int, image_index: int):
    embed = lambda x: llm.embed(params["llm"], cfg.llm, x[None])[0]  # noqa: E731
    slots = jnp.asarray(visual_slots(pooled.shape[0]))
    seq = embed(time_ids).at[slots].set(pooled.reshape(-1, pooled.shape[-1]).astype(cfg.llm.dtype))
    text = jnp.concatenate([ids[:image_index], ids[image_index + 1:]])
    scores, stages = Selector(cfg.llm.dtype, cfg.llm.param_dtype).apply(
        {"params": {key: params[key] for key in SELECTOR_KEYS}}, seq, embed(text))
    rotary = feature_rotary(seq)
    rows, kept = select(rotary, scores, k)
    x = fe.splice(embed(ids[:image_index]), rows, embed(ids[image_index + 1:]))
    return x, dict(stages, visual_seq=seq, scores=scores, rotary_out=rotary, kept_visual_positions=kept)


def prepare_inputs(params: dict, cfg: VideoXLProConfig, pooled, time_ids: np.ndarray, vision_pad_id: int,
                   input_ids: Sequence[int], keep_rate: float) -> tuple[jax.Array, dict]:
    """Selector + splice: pooled (G, 144, D), time ids (G·154,), prompt ids with one −200 and the keep rate u →
    (inputs_embeds (L, D), stages: visual_seq, text_feat, wtta_out, scores, rotary_out, kept_visual_positions)."""
    time_ids = np.asarray(time_ids)
    g = pooled.shape[0]
    if time_ids.shape != (g * GROUP_SIZE,) or not np.array_equal(np.flatnonzero(time_ids == vision_pad_id),
                                                                  visual_slots(g)):
        raise ValueError(f"time prompt of {len(time_ids)} ids does not have 10 time tokens + 144 visual slots in each "
                         f"of the {g} groups (Video-XL-Pro's WindowTimeToTokenAttention layout)")
    ids = np.asarray(input_ids, np.int32)
    hits = np.flatnonzero(ids == IMAGE_TOKEN_INDEX)
    if len(hits) != 1:
        raise ValueError(f"the prompt ids need exactly one <image> ({IMAGE_TOKEN_INDEX}), found {len(hits)}")
    if not 0 < keep_rate <= 1:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate!r}")
    k = num_kept(g * 144, keep_rate)
    return _prepare(params, pooled, jnp.asarray(time_ids, jnp.int32), jnp.asarray(ids), cfg=cfg, k=k,
                    image_index=int(hits[0]))


class VideoXLProFamily(Family):
    name = "video_xl_pro"
    per_layer_llm = True
    answer_options = frozenset({"keep_rate", "pad_repeat_counts", "pad_seed"})

    # ------------------------------------------------------------------ config

    def claims(self, hf: dict, keys: frozenset[str]) -> bool:
        if keys:
            return "model.WindowTimeToTokenAttention.q_proj.weight" in keys and "model.sae.temporal_encoding" in keys
        return hf.get("model_type") == "llava_qwen" and "siglip" in str(hf.get("mm_vision_tower", ""))

    def config_from_hf(self, hf: dict, source: str) -> VideoXLProConfig:
        return VideoXLProConfig.from_hf(hf, source)

    def config_to_hf(self, cfg: VideoXLProConfig) -> dict:
        return cfg.to_hf()

    def llm_config(self, cfg: VideoXLProConfig) -> LLMConfig:
        return cfg.llm

    def with_dtypes(self, cfg: VideoXLProConfig, dtype: str, param_dtype: str,
                    remat_policy: str | None = None) -> VideoXLProConfig:
        cfg = cfg.with_dtypes(dtype, param_dtype)
        return cfg.replace(llm=cfg.llm.replace(remat_policy=remat_policy)) if remat_policy else cfg

    def describe(self, cfg: VideoXLProConfig) -> dict:
        return {**super().describe(cfg), "vision": cfg.frontend.describe()}

    # ------------------------------------------------------------------ parameters

    def rules(self, cfg: VideoXLProConfig) -> list:
        sel = [Rule("model.text_mlp.0.weight", "text_mlp/kernel", LINEAR), Rule("model.text_mlp.0.bias", "text_mlp/bias")]
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sel += [Rule(f"model.WindowTimeToTokenAttention.{p}.weight", f"WindowTimeToTokenAttention/{p}/kernel", LINEAR),
                    Rule(f"model.WindowTimeToTokenAttention.{p}.bias", f"WindowTimeToTokenAttention/{p}/bias", IDENTITY)]
        return [*fe.frontend_rules(cfg.frontend), *sel, *llm_rules(cfg.llm, root="llm/")]

    def init(self, cfg: VideoXLProConfig, key: jax.Array) -> dict:
        k1, k2, k3 = jax.random.split(key, 3)
        d = cfg.llm.hidden_size
        selector = Selector(cfg.llm.dtype, cfg.llm.param_dtype).init(k2, jnp.zeros((GROUP_SIZE, d)), jnp.zeros((1, d)))
        return {**fe.init_frontend(cfg.frontend, k1), **selector["params"],
                "llm": Qwen2(cfg.llm).init(k3, jnp.zeros((1, 1), jnp.int32))["params"]}

    def side_folders(self, hf: dict) -> tuple[str, ...]:
        return (fe.VISION_FOLDER,)

    def write_side_folders(self, out: str, cfg: VideoXLProConfig, tensors: dict[str, np.ndarray]) -> None:
        fe.write_vision_folder(out, cfg.frontend, tensors)

    # ------------------------------------------------------------------ media, prompt, LLM

    def sampling(self, cfg: VideoXLProConfig) -> Sampling:
        return Sampling(rule="linspace", fps=None, max_frames=128)  # demo.py: max_frames_num = 128

    def visual_tokens_per_frame(self, cfg: VideoXLProConfig) -> float:
        return cfg.frontend.tokens_per_group / fe.GROUP

    def encode(self, params: dict, cfg: VideoXLProConfig, frames, *, intermediates: bool = False,
               pad_repeat_counts=None, pad_seed: int = 0, **options) -> Encoded:
        """Frames → pooled (G, 144, D). `pad_repeat_counts` (F,) overrides the counts drawn from `pad_seed`."""
        if options:
            raise ConfigError(f"{self.name}: unknown encode option(s) {', '.join(sorted(options))}")
        t0 = time.perf_counter()
        pixels = fe.preprocess_frames(frames.frames, cfg.frontend)
        counts = fe.pad_counts_random(len(pixels), pad_seed) if pad_repeat_counts is None else pad_repeat_counts
        pooled, stages = fe.encode_groups(params, cfg.frontend, pixels, counts, intermediates=intermediates)
        pooled = jax.block_until_ready(pooled)
        if intermediates:
            stages = dict(stages, pixels=pixels)
        return Encoded(pooled, frames, {"vision": time.perf_counter() - t0}, stages,
                       {"pad_repeat_counts": fe.check_pad_counts(counts, len(pixels))})

    def answer_encoded(self, model, encoded: Encoded, question: str, *, history: Sequence[tuple[str, str]] = (),
                       gen: GenerationConfig, seed: int | None = None, keep_rate: float | None = None,
                       pad_repeat_counts=None, pad_seed: int | None = None, **options) -> tuple[np.ndarray, dict]:
        self.check_options(options)
        cfg = model.config
        if pad_repeat_counts is not None or pad_seed is not None:
            counts = (fe.pad_counts_random(encoded.num_frames, pad_seed or 0) if pad_repeat_counts is None
                      else pad_repeat_counts)
            if fe.check_pad_counts(counts, encoded.num_frames) != encoded.cache.get("pad_repeat_counts"):
                encoded = self.encode(model.params, cfg, encoded.frames, pad_repeat_counts=counts)
        u = draw_keep_rate(seed, *cfg.keep_rate_range) if keep_rate is None else float(keep_rate)
        time_ids, pad = time_ids_for(model.tokenizer, encoded.frames.timestamps)
        ids, _ = tokenize_with_image(build_prompt(question, "", history), model.tokenizer)
        t0 = time.perf_counter()
        x, stages = prepare_inputs(model.params, cfg, encoded.visual, time_ids, pad, ids, u)
        t1 = time.perf_counter()
        vocab = cfg.llm.vocab_size
        tokens, lengths = generate_from_embeds(model.params["llm"], x[None], jnp.ones((1, x.shape[0]), bool),
                                               jnp.zeros((1, vocab), bool), sample_rng(seed), cfg=cfg.llm, gen=gen)
        tokens = np.asarray(tokens)[0, :int(lengths[0])]
        report = {"visual_tokens": int(x.shape[0] - len(ids) + 1), "prompt_tokens": int(x.shape[0]),
                  "keep_rate": u, "kept_visual": int(stages["kept_visual_positions"].shape[0]),
                  "pad_repeat_counts": list(encoded.cache["pad_repeat_counts"]),
                  "seconds_prefill": t1 - t0, "seconds_decode": time.perf_counter() - t1}
        return tokens, report

    # ------------------------------------------------------------------ training

    def training_media(self, cfg: VideoXLProConfig) -> TrainingMedia:
        """`utils.process_video_with_pyav`: data.fps (the original's video_fps, 1) capped by uniform
        data.max_frames (frames_upbound); no remainder dropped (the loss duplicates frames to groups of 4)."""
        return TrainingMedia(rule="fps_cap", time_message=False)

    def training_extras(self, cfg: VideoXLProConfig, tokenizer, seconds, n_frames: int, bucket: int) -> dict:
        """time_ids (bucket / 4, 10): each group's `"Time {t:06.1f}s:"` (exactly 10 ids, as the selector needs)."""
        if bucket % fe.GROUP:
            raise ConfigError(f"video_xl_pro: frame bucket {bucket} is not a multiple of {fe.GROUP} (data.frame_buckets)")
        return {"time_ids": fe.group_time_ids(tokenizer, seconds, bucket, fe.PRO_TIME_FORMAT, TIME_TOKENS, exact=True)}

    def loss(self, params: dict, batch: dict, spec: Any) -> tuple[jax.Array, jax.Array]:
        """Σ CE over the answers through the whole model (front end, selector with a keep rate drawn per row,
        LLM; loss.py)."""
        return video_ce(params, batch, spec)


FAMILY = register(VideoXLProFamily())
