"""The VideoChat-Flash / XComp model handle: `model.answer(video, question)` and friends.

Stages of one answer (each timed in the report): read (PyAV decode + sample + resize),
vision (UMT ViT), merge (ToMe + projector), prefill, decode. The encoded video can be kept
(`encode_video`) and asked several questions (`answer_encoded`); with a compression plan
that does not depend on the question (none, suffix/uniform rules), the prefilled
[system + video] cache is reused too and only the question is run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import ConfigError
from lvjax.generate import GenerationConfig, bucket, decode_from_cache, extend_cache, prefill_cache, sample_rng
from lvjax.models import llm
from lvjax.models import videochat_flash as vcf
from lvjax.models.drops import KeepStatic, drops_for_plan
from lvjax.selection import QCCompConfig

DEFAULT_VIDEO = dict(fps=1.0, max_frames=512, min_frames=64)


@dataclasses.dataclass
class EncodedVideo:
    """A video after the vision side: visual tokens (T·16, D) and what the prompt needs."""

    visual: jax.Array
    frames: np.ndarray  # uint8 (T, H, W, 3) as sampled (kept for QC-Comp re-encoding)
    num_frames: int
    duration: float
    time_msg: str
    seconds: dict
    prefix_cache: dict = dataclasses.field(default_factory=dict)


@functools.partial(jax.jit, static_argnames=("cfg", "clip_batch"))
def _vision(params, clips, *, cfg, clip_batch):
    return vcf.vision_features(params, cfg, clips, clip_batch)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _merge(params, features, *, cfg):
    return vcf.merge_and_project(params, cfg, features)


@functools.partial(jax.jit, static_argnames=("cfg", "visual_start"))
def _splice(params, ids, visual, *, cfg, visual_start):
    return vcf.splice(params, cfg, ids, visual, visual_start)


class VideoChatFlash:
    """A loaded VideoChat-Flash / XComp model (`lvjax.load` returns it for such folders)."""

    def __init__(self, family, config: vcf.VideoChatFlashConfig, params: dict, generation: GenerationConfig, source: str):
        self.family, self.config, self.params, self.generation, self.source = family, config, params, generation, source
        self._tokenizer = None
        self.clip_batch = 8

    @classmethod
    def from_loaded(cls, family, cfg, params, gen_dict: dict, source: str, dtype: str, param_dtype: str):
        cfg = cfg.with_dtypes(dtype, param_dtype)
        return cls(family, cfg, params, GenerationConfig.from_hf(gen_dict, cfg.llm), source)

    # ------------------------------------------------------------------ text side

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            if not any(os.path.isfile(os.path.join(self.source, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
                raise ConfigError(f"{self.source}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
            self._tokenizer = AutoTokenizer.from_pretrained(self.source)
        return self._tokenizer

    def _prompt_ids(self, question: str, time_msg: str, history: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """Token ids before and after the <image> placeholder of the chat prompt."""
        from lvjax.prompt import build_prompt, tokenize_with_image

        if not question or not question.strip():
            raise ConfigError("the question is empty")
        text = build_prompt(question, time_msg=time_msg, history=history)
        ids, index = tokenize_with_image(text, self.tokenizer)
        return list(ids[:index]), list(ids[index + 1:])

    def _decode_text(self, tokens: np.ndarray, gen: GenerationConfig) -> str:
        out = []
        for t in tokens.tolist():
            if t in gen.eos_token_ids:
                break
            out.append(t)
        return self.tokenizer.decode(out, skip_special_tokens=True).strip()

    # ------------------------------------------------------------------ vision side

    def encode_video(self, video: Any, *, fps: float | None = None, max_frames: int | None = None,
                     min_frames: int | None = None, start: float | None = None, end: float | None = None) -> EncodedVideo:
        """Decode, sample and encode a video (path, folder of frames, or (frames uint8 (T,H,W,3), fps))."""
        from lvjax.video import load_frames

        t0 = time.perf_counter()
        opts = dict(DEFAULT_VIDEO)
        opts.update({k: v for k, v in dict(fps=fps, max_frames=max_frames, min_frames=min_frames).items() if v is not None})
        sampled = load_frames(video, fps=opts["fps"], max_num_frames=opts["max_frames"],
                              min_num_frames=opts["min_frames"], start=start, end=end)
        t_read = time.perf_counter() - t0
        visual, seconds = self._encode(sampled.frames)
        seconds = {"read": t_read, **seconds}
        return EncodedVideo(visual, sampled.frames, len(sampled.frames), sampled.duration, sampled.time_msg, seconds)

    def encode_image(self, image: Any) -> EncodedVideo:
        """A single image (path or uint8 (H, W, 3)) as a one-frame clip → 16 visual tokens.

        As the original's ver7 image path: the whole image squashed to the model resolution
        (no anyres tiling), the ViT run with T = 1, ToMe to 16 tokens; no time message.
        """
        from PIL import Image

        from lvjax.video import VideoError

        t0 = time.perf_counter()
        if isinstance(image, (str, os.PathLike)):
            try:
                with Image.open(image) as im:
                    image = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as e:
                raise VideoError(f"{image}: not a readable image ({e})") from None
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise VideoError(f"<image>: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
        t_read = time.perf_counter() - t0
        visual, seconds = self._encode(image[None], clip_len=1)
        return EncodedVideo(visual, image[None], 1, 0.0, "", {"read": t_read, **seconds})

    def _encode(self, frames_u8: np.ndarray, clip_len: int | None = None) -> tuple[jax.Array, dict]:
        """uint8 frames (T, H, W, 3) → visual tokens (T'·16, D); T' = T padded up to a multiple of L."""
        from lvjax.video.preprocess import preprocess

        cfg = self.config
        L = clip_len or cfg.local_num_frames
        frames_u8 = self._pad_to_clips(frames_u8) if clip_len is None else frames_u8
        t0 = time.perf_counter()
        pixels = preprocess(frames_u8, cfg.vision.image_size)
        clips = jnp.asarray(pixels).reshape((-1, L) + pixels.shape[1:])
        feats = _vision(self.params, clips, cfg=cfg, clip_batch=self.clip_batch)
        feats.block_until_ready()
        t1 = time.perf_counter()
        visual = _merge(self.params, feats, cfg=cfg)
        visual.block_until_ready()
        return visual, {"vision": t1 - t0, "merge": time.perf_counter() - t1}

    def _pad_to_clips(self, frames_u8: np.ndarray) -> np.ndarray:
        """Repeat the last frame up to a multiple of the clip length L (the original pads its frame list so)."""
        L = self.config.local_num_frames
        if len(frames_u8) % L:
            frames_u8 = np.concatenate([frames_u8, np.repeat(frames_u8[-1:], L - len(frames_u8) % L, axis=0)])
        return frames_u8

    # ------------------------------------------------------------------ answering

    def answer(self, video: Any, question: str, *, fps: float | None = None, max_frames: int | None = None,
               min_frames: int | None = None, **options) -> tuple[str, dict]:
        """Answer a question about a video. Returns (text, report).

        options: max_new_tokens, compression (plan name), qc (QCCompConfig or None), history,
        seed, and generation options (do_sample, temperature, top_p, top_k, repetition_penalty).
        """
        if _is_image(video):
            encoded = self.encode_image(video)
        else:
            encoded = self.encode_video(video, fps=fps, max_frames=max_frames, min_frames=min_frames)
        return self.answer_encoded(encoded, question, **options)

    def answer_encoded(self, encoded: EncodedVideo, question: str, *, history: Sequence[tuple[str, str]] = (),
                       compression: str | None = None, qc: QCCompConfig | None = None,
                       max_new_tokens: int | None = None, seed: int | None = 0, do_sample: bool = False,
                       **gen_options) -> tuple[str, dict]:
        """Answer from an already encoded video (reusing its prefilled cache where possible).

        Greedy by default, as the original evaluations run; `do_sample=True` samples with
        generation_config.json's temperature/top-p/top-k unless overridden. The repetition
        penalty of generation_config.json (1.1 for VideoChat-Flash) applies in both cases.
        """
        gen = self.generation.replace(max_new_tokens=max_new_tokens or 512, do_sample=do_sample, **gen_options)
        prefix, suffix = self._prompt_ids(question, encoded.time_msg, history)
        report = {"frames": encoded.num_frames, **{f"seconds_{k}": round(v, 4) for k, v in encoded.seconds.items()}}
        visual = encoded.visual
        plan_name = compression or self.config.default_compression
        use_qc = qc is not None and encoded.num_frames >= qc.threshold
        if use_qc:
            from lvjax.selection import select_and_encode

            visual, qc_report = select_and_encode(self, encoded, prefix, suffix, plan_name, qc)
            report.update(qc_report)
        drops = self.drops(plan_name, int(visual.shape[0]))
        report.update(visual_tokens=int(visual.shape[0]), prompt_tokens=len(prefix) + int(visual.shape[0]) + len(suffix),
                      compression=plan_name)
        t0 = time.perf_counter()
        rng = sample_rng(seed)
        seen = jnp.zeros((1, self.config.llm.vocab_size), bool)  # the original generates from embeddings only
        question_dependent = any(not isinstance(d.select, KeepStatic) for d in drops)
        if question_dependent or use_qc:
            last, caches, offset = self._prefill_whole(visual, prefix, suffix, drops, gen)
        else:
            last, caches, offset = self._prefill_reusing(encoded, visual, prefix, suffix, drops, gen)
        last.block_until_ready()
        t1 = time.perf_counter()
        tokens, lengths = decode_from_cache(self.params["llm"], last, caches, offset, seen, rng, cfg=self.config.llm, gen=gen)
        tokens = np.asarray(tokens)[0]
        t2 = time.perf_counter()
        report.update(seconds_prefill=round(t1 - t0, 4), seconds_decode=round(t2 - t1, 4),
                      new_tokens=int(np.asarray(lengths)[0]))
        return self._decode_text(tokens, gen), report

    def drops(self, plan_name: str, n_visual: int) -> tuple:
        """The static drop tuple of a compression plan for a visual block of n_visual tokens."""
        return drops_for_plan(self.plan(plan_name), self.config.llm, n_visual)

    def plan(self, name: str):
        """A `CompressionPlan` by name; the VideoChat-Flash rules take layers/ratios from config.json."""
        from lvjax.compression import build_plan

        cfg = self.config
        kw = {}
        if name in ("uniform", "attention", "uniform0_attention", "uniform1_attention") and cfg.compress_layers:
            kw = dict(layers=cfg.compress_layers, ratios=cfg.compress_ratios)
        try:
            return build_plan(name, cfg.llm.num_hidden_layers, cfg.tokens_per_frame, **kw)
        except ValueError as e:
            raise ConfigError(f"compression: {e}") from None

    def _layout(self, prefix: list[int], n_visual: int, suffix: list[int], pad_to: int):
        """ids/valid (1, S) = [prefix][visual slots][padding][suffix], suffix right-aligned in `pad_to` slots."""
        pad_id = self.generation.pad_token_id
        ids = np.full((1, len(prefix) + n_visual + pad_to), pad_id, np.int32)
        valid = np.zeros(ids.shape, bool)
        ids[0, : len(prefix)] = prefix
        valid[0, : len(prefix) + n_visual] = True
        if suffix:
            ids[0, -len(suffix):] = suffix
            valid[0, -len(suffix):] = True
        return ids, valid

    def _prefill_whole(self, visual, prefix, suffix, drops, gen):
        n_suffix = bucket(len(suffix))
        ids, valid = self._layout(prefix, visual.shape[0], suffix, n_suffix)
        x = _splice(self.params, jnp.asarray(ids), visual[None], cfg=self.config, visual_start=len(prefix))
        pad_start = len(prefix) + int(visual.shape[0])
        last, caches = prefill_cache(self.params["llm"], x, jnp.asarray(valid), cfg=self.config.llm,
                                     max_new=gen.max_new_tokens, drops=drops, visual_start=len(prefix),
                                     n_visual=int(visual.shape[0]), pad_span=(pad_start, pad_start + n_suffix - len(suffix)))
        return last, caches, 0

    def _prefill_reusing(self, encoded, visual, prefix, suffix, drops, gen):
        n_suffix = bucket(len(suffix))
        budget = n_suffix + gen.max_new_tokens
        key = (tuple(prefix), drops)
        cached = encoded.prefix_cache.get(key)
        if cached is None or cached[1] < budget:
            ids, valid = self._layout(prefix, visual.shape[0], [], 0)
            x = _splice(self.params, jnp.asarray(ids), visual[None], cfg=self.config, visual_start=len(prefix))
            budget = max(budget, 2 * n_suffix + gen.max_new_tokens)  # room for longer follow-up questions
            _, caches = prefill_cache(self.params["llm"], x, jnp.asarray(valid), cfg=self.config.llm, max_new=budget,
                                      drops=drops, visual_start=len(prefix), n_visual=int(visual.shape[0]), pad_span=())
            encoded.prefix_cache[key] = (caches, budget)
        caches = encoded.prefix_cache[key][0]
        ids = np.full((1, n_suffix), self.generation.pad_token_id, np.int32)
        valid = np.zeros((1, n_suffix), bool)
        ids[0, n_suffix - len(suffix):], valid[0, n_suffix - len(suffix):] = suffix, True
        x = llm.embed(self.params["llm"], self.config.llm, jnp.asarray(ids))
        last, caches = extend_cache(self.params["llm"], caches, x, jnp.asarray(valid), 0, cfg=self.config.llm)
        return last, caches, n_suffix


def _is_image(media: Any) -> bool:
    """An image file path or a single (H, W, 3) array (videos are (T, H, W, 3), folders or video files)."""
    from lvjax.video import IMAGE_EXTENSIONS

    if isinstance(media, (str, os.PathLike)):
        return os.path.isfile(media) and str(media).lower().endswith(IMAGE_EXTENSIONS)
    return isinstance(media, np.ndarray) and media.ndim == 3
