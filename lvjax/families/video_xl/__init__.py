"""Video-XL (VectorSpaceLab/Video-XL, `Video-XL/`): CLIP → mlp2x_gelu → 2×2 pool → Qwen2 with VST memory.

Params: {"vision": CLIP ViT, "projector": mlp_0/mlp_2, "llm": Qwen2 + beacon_* projections and
`beacon_embed_tokens`} (see convert.py for the HF keys, memory.py for the windows).

Images: a single image (`answer("photo.png", q)`, `lvjax answer --video photo.png`, a uint8
(H, W, 3) array; `VideoFrames.method == "image"`) is routed as the original: `image_aspect_ratio`
anyres + `mm_patch_merge_type` unires (image.py) — the best `image_grid_pinpoints` resolution,
aspect-kept resize and black padding, row-major 336 crops, each CLIP-encoded, projected and
2×2-pooled to 144 tokens, the base image dropped, no newline tokens. The LLM then takes the
crops' tokens like frames' (same prompt, windows, VSTs and ratios). A config that routes images
any other way gets a `ConfigError` naming the field (the original's `generate()` has no other
single-image path).
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import ConfigError, LLMConfig
from lvjax.families.base import Encoded, Family, Sampling, TrainingMedia
from lvjax.families.registry import register
from lvjax.families.video_xl import convert
from lvjax.families.video_xl.config import VideoXLConfig
from lvjax.families.video_xl.image import UNIRES_POOL, anyres_crops
from lvjax.families.video_xl.loss import video_ce
from lvjax.families.video_xl.memory import (
    WindowPlan,
    decode,
    draw_ratios,
    extend_text,
    init_llm,
    prefill_video,
)
from lvjax.families.video_xl.prompt import PromptIds, prompt_ids
from lvjax.families.video_xl.vision import clip_preprocess, encode_pixels, projector
from lvjax.generate import GenerationConfig, bucket, sample_rng
from lvjax.models.clip import init_clip

ORIGINAL_RATIO_SEED = 42  # `Memory.rng = np.random.default_rng(42)`, made once per Memory object


def window_plan(cfg: VideoXLConfig, n_visual: int, compression_ratio: int | None = None,
                ratio_rng: np.random.Generator | None = None) -> WindowPlan:
    """The windows of `n_visual` visual tokens: one ratio per window (`compression_ratio`, or the
    config's `beacon_ratio`, drawn `step-random` from `ratio_rng` — a fresh `default_rng(42)`, as a
    fresh original Memory, when None; pass your own Generator to carry its state across calls)."""
    ratios = (int(compression_ratio),) if compression_ratio else cfg.beacon_ratio
    if min(ratios) < 1:
        raise ConfigError(f"compression_ratio must be a positive integer, got {compression_ratio!r}")
    raw = WindowPlan.build(n_visual, cfg.beacon_window, ratios, min(ratios)).raw
    if len(ratios) > 1 and ratio_rng is None:
        ratio_rng = np.random.default_rng(ORIGINAL_RATIO_SEED)
    return WindowPlan.build(n_visual, cfg.beacon_window, draw_ratios(ratios, list(raw), ratio_rng), min(ratios))


def prefill_memory(params: dict, cfg: VideoXLConfig, prefix: Sequence[int], visual: jax.Array, plan: WindowPlan):
    """[prefix | video windows] → (memory cache, memory length seen by each window)."""
    src, rows, n_vst = plan.arrays()
    return prefill_video(params["llm"], jnp.asarray([prefix], jnp.int32), visual, jnp.asarray(src), jnp.asarray(rows),
                         jnp.asarray(n_vst), cfg=cfg.llm, beacon=cfg.beacon_param)


def prefill_text(params: dict, cfg: VideoXLConfig, mem, text: Sequence[int], room: int):
    """Text after the video (padded to a bucket) → (hidden (1, T, D), memory with `room` free slots)."""
    ids = np.zeros((1, bucket(len(text))), np.int32)
    ids[0, :len(text)] = text
    return extend_text(params["llm"], mem, jnp.asarray(ids), jnp.int32(len(text)), cfg=cfg.llm,
                       beacon=cfg.beacon_param, room=room)


class VideoXLFamily(Family):
    name = "video_xl"
    answer_options: ClassVar[frozenset[str]] = frozenset({"compression_ratio", "ratio_rng"})

    def claims(self, hf: dict, keys: frozenset[str]) -> bool:
        return hf.get("model_type") == "llava_qwen" and ("beacon_window" in hf or "model.beacon_embed_tokens.weight" in keys)

    def config_from_hf(self, hf: dict, source: str) -> VideoXLConfig:
        return VideoXLConfig.from_hf(hf, source)

    def config_to_hf(self, cfg: VideoXLConfig) -> dict:
        return cfg.to_hf()

    def llm_config(self, cfg: VideoXLConfig) -> LLMConfig:
        return cfg.llm

    def with_dtypes(self, cfg: VideoXLConfig, dtype: str, param_dtype: str, remat_policy: str | None = None) -> VideoXLConfig:
        cfg = cfg.with_dtypes(dtype, param_dtype)
        return cfg.replace(llm=cfg.llm.replace(remat_policy=remat_policy)) if remat_policy else cfg

    def describe(self, cfg: VideoXLConfig) -> dict:
        c = cfg.clip
        return {**super().describe(cfg),
                "vision": {"hidden_size": c.hidden_size, "layers": c.num_hidden_layers, "layers_run": c.num_run_layers,
                           "image_size": c.image_size, "tokens_per_frame": cfg.tokens_per_frame},
                "beacon": {"window": cfg.beacon_window, "ratios": list(cfg.beacon_ratio)}}

    def rules(self, cfg: VideoXLConfig) -> list:
        return convert.rules(cfg)

    def init(self, cfg: VideoXLConfig, key: jax.Array) -> dict:
        k1, k2, k3 = jax.random.split(key, 3)
        proj = projector(cfg).init(k2, jnp.zeros((1, 1, cfg.mm_hidden_size)))["params"]
        return {"vision": init_clip(cfg.clip, k1), "projector": proj, "llm": init_llm(cfg.llm, cfg.beacon_param, k3)}

    def side_folders(self, hf: dict) -> tuple[str, ...]:
        tower = hf.get("mm_vision_tower", "")
        return (tower,) if isinstance(tower, str) and tower and not os.path.isabs(tower) else ("vision_tower",)

    def write_side_folders(self, out: str, cfg: VideoXLConfig, tensors: dict[str, np.ndarray]) -> None:
        convert.write_clip_folder(out, cfg, tensors)

    def sampling(self, cfg: VideoXLConfig) -> Sampling:
        # eval/videoxl.py: np.linspace(0, n - 1, max_frames_num) with max_frames_num = 32 by default.
        return Sampling(rule="linspace", fps=None, max_frames=32)

    def visual_tokens_per_frame(self, cfg: VideoXLConfig) -> float:
        return float(cfg.tokens_per_frame)

    def encode(self, params: dict, cfg: VideoXLConfig, frames, *, intermediates: bool = False, **options) -> Encoded:
        if options:
            raise ConfigError(f"video_xl: encode takes no option(s) {sorted(options)}")
        if getattr(frames, "method", None) == "image":
            return self.encode_image(params, cfg, frames, intermediates=intermediates)
        t0 = time.perf_counter()
        pixels = clip_preprocess(frames.frames, cfg.preprocess)
        t1 = time.perf_counter()
        tokens, stages = encode_pixels(params, jnp.asarray(pixels), cfg=cfg, intermediates=intermediates)
        tokens.block_until_ready()
        if intermediates:
            stages = {"pixels": pixels, **stages}
        return Encoded(tokens, frames, {"preprocess": t1 - t0, "vision": time.perf_counter() - t1}, stages)

    def encode_image(self, params: dict, cfg: VideoXLConfig, frames, *, intermediates: bool = False) -> Encoded:
        """One image (`frames.frames[0]`) → the unires crops' tokens (rows·cols·144, D), crop-major.

        `encoded.cache["video_xl_image_grid"]` = (rows, cols); stages (when asked): 'crops'
        (uint8), 'pixels', 'vision', 'projector', 'pooled'."""
        pinpoints = cfg.image.check()
        if cfg.clip.grid % UNIRES_POOL:
            raise ConfigError(f"video_xl: the {cfg.clip.grid}×{cfg.clip.grid} CLIP patch grid cannot be pooled 2×2 "
                              "(unires image crops)")
        image = np.asarray(frames.frames[0])
        if image.ndim != 3 or min(image.shape[:2]) < 1:
            raise ConfigError(f"video_xl: expected one (H, W, 3) image, got shape {image.shape}")
        t0 = time.perf_counter()
        crops, grid = anyres_crops(image, pinpoints, cfg.clip.image_size)
        pixels = clip_preprocess(crops, cfg.preprocess)
        t1 = time.perf_counter()
        tokens, stages = encode_pixels(params, jnp.asarray(pixels), cfg=cfg, intermediates=intermediates,
                                       stride=UNIRES_POOL)
        tokens.block_until_ready()
        if intermediates:
            stages = {"crops": crops, "pixels": pixels, **stages}
        enc = Encoded(tokens, frames, {"preprocess": t1 - t0, "vision": time.perf_counter() - t1}, stages)
        enc.cache["video_xl_image_grid"] = grid
        return enc

    def answer_encoded(self, model: Any, encoded: Encoded, question: str, *, history: Sequence[tuple[str, str]] = (),
                       gen: GenerationConfig, seed: int | None = None, compression_ratio: int | None = None,
                       ratio_rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
        """Greedy/sampled answer. The [prefix | video] memory is kept in `encoded.cache` per window
        ratios, so a second question with the same ratios (a fixed ratio) reuses it."""
        cfg, params = model.config, model.params
        ids = prompt_ids(model.tokenizer, question, history)
        n_visual = int(encoded.visual.shape[0])
        plan = window_plan(cfg, n_visual, compression_ratio, ratio_rng)
        t0 = time.perf_counter()
        key = ("video_xl_memory", ids.prefix, plan)
        reused = key in encoded.cache
        if not reused:
            encoded.cache[key] = prefill_memory(params, cfg, ids.prefix, encoded.visual, plan)[0]
        hidden, mem = prefill_text(params, cfg, encoded.cache[key], ids.text, gen.max_new_tokens)
        last = hidden[:, len(ids.text) - 1]
        last.block_until_ready()
        t1 = time.perf_counter()
        tokens, count, _, _ = decode(params["llm"], mem, last, jnp.asarray(self.seen(cfg, ids, n_visual)),
                                     sample_rng(seed), cfg=cfg.llm, beacon=cfg.beacon_param, gen=gen)
        tokens = np.asarray(tokens)[: int(count)]
        n_vst = int(np.sum(plan.arrays()[2]))
        grid = encoded.cache.get("video_xl_image_grid")
        extra = {"image_crops": list(grid)} if grid else {}
        return tokens, {**extra, "visual_tokens": n_visual, "prompt_tokens": len(ids.ids) - 1 + n_visual,
                        "window_ratios": list(plan.ratios), "summary_tokens": n_vst,
                        "memory_tokens": len(ids.prefix) + n_vst + len(ids.text), "memory_reused": reused,
                        "seconds_prefill": t1 - t0, "seconds_decode": time.perf_counter() - t1}

    @staticmethod
    def seen(cfg: VideoXLConfig, ids: PromptIds, n_visual: int) -> np.ndarray:
        """(1, V) bool: the repetition penalty's prompt tokens — the expanded prompt, placeholders included."""
        seen = np.zeros((1, cfg.llm.vocab_size), bool)
        seen[0, ids.expanded(cfg.placeholder_id, n_visual)] = True
        return seen

    def training_media(self, cfg: VideoXLConfig) -> TrainingMedia:
        return TrainingMedia(rule="linspace", time_message=False, resize="shortest_edge_crop")

    def loss(self, params: dict, batch: dict, spec: Any) -> tuple[jax.Array, jax.Array]:
        """Σ CE over the answers with the `step-random` ratio mix, gradients through the memory (loss.py)."""
        return video_ce(params, batch, spec)


FAMILY = register(VideoXLFamily())
