"""The model handle `lvjax.load` returns, written once against the family protocol.

    model.answer(video, question, ...)          → (text, report)
    model.encode_video(video, ...)              → Encoded (ask it several questions)
    model.answer_encoded(encoded, question)     → (text, report); reuses the family's caches
    model.logits(ids) / model.generate(ids)     the language model on text
    model.info()                                family, parameter count, dtype, sizes, sampling

A video is a file, a folder of images, already-sampled `lvjax.video.VideoFrames`, or a bare
uint8 array (T, H, W, 3) with `fps=` (used as given, no re-sampling); an image is a path or a
uint8 (H, W, 3) array.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from lvjax.config import ConfigError
from lvjax.families.base import Encoded, Family
from lvjax.generate import (
    GenerationConfig,
    bucket,
    generate_from_embeds,
    right_align,
    sample_rng,
    seen_from_ids,
)
from lvjax.models import llm
from lvjax.video import (
    IMAGE_EXTENSIONS,
    VideoError,
    VideoFrames,
    load_frames,
    time_message,
)

DEFAULT_MAX_NEW_TOKENS = 512


class Model:
    """A loaded model of any family: `.family`, `.config`, `.params`, `.generation`, `.source`;
    `.mesh` (None on one device), `.rules` (logical axis → mesh axes), `.load_report` (see `lvjax.load`)."""

    def __init__(self, family: Family, config, params: dict, generation: GenerationConfig, source: str, *,
                 mesh=None, rules=(), load_report: dict | None = None):
        self.family, self.config, self.params, self.generation, self.source = family, config, params, generation, source
        self.mesh, self.rules, self.load_report = mesh, tuple(rules), load_report or {}
        self._tokenizer = None

    @contextlib.contextmanager
    def _sharded(self):
        """Trace under the mesh and the logical rules, so activation / cache constraints apply."""
        if self.mesh is None:
            yield
            return
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    # ------------------------------------------------------------------ description and text side

    def info(self) -> dict:
        """{'family', 'parameters', 'dtype', 'llm': sizes, 'vision': sizes, 'sampling': defaults, ...}."""
        leaves = jax.tree.leaves(self.params)
        sampling = self.family.sampling(self.config)
        return {"family": self.family.name, "parameters": int(sum(np.size(a) for a in leaves)),
                "dtype": ",".join(sorted({str(a.dtype) for a in leaves})), "source": self.source,
                **self.family.describe(self.config),
                **({"sampling": dataclasses.asdict(sampling)} if sampling else {})}

    @property
    def tokenizer(self):
        """The `transformers.AutoTokenizer` of the source folder (loaded on first use)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # heavy; only when text is needed

            if not any(os.path.isfile(os.path.join(self.source, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
                raise ConfigError(f"{self.source}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
            self._tokenizer = AutoTokenizer.from_pretrained(self.source)
        return self._tokenizer

    def logits(self, input_ids, attention_mask=None) -> np.ndarray:
        """input_ids (B, T) → fp32 logits (B, T, V) of the language model; padding (mask 0) on either side."""
        ids = np.asarray(input_ids, np.int32)
        mask = np.ones_like(ids, bool) if attention_mask is None else np.asarray(attention_mask, bool)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"input_ids must be (B, T) and attention_mask the same shape; got {ids.shape}, {mask.shape}")
        with self._sharded():
            return np.asarray(_logits(self._llm_params, jnp.asarray(ids), jnp.asarray(mask), cfg=self._llm_cfg))

    def generate(self, input_ids, attention_mask=None, *, max_new_tokens: int | None = None, seed: int | None = None,
                 **options) -> np.ndarray:
        """Continue each text prompt; returns new tokens (B, max_new_tokens), `pad_token_id` after a stop token.

        options: do_sample, temperature, top_p, top_k, repetition_penalty, eos_token_ids, pad_token_id
        (defaults from generation_config.json, greedy unless it says otherwise).
        """
        gen = self.generation.replace(max_new_tokens=max_new_tokens, **options)
        ids = np.asarray(input_ids, np.int32)
        if ids.ndim == 1:
            ids = ids[None]
        mask = np.ones_like(ids, bool) if attention_mask is None else np.asarray(attention_mask, bool).reshape(ids.shape)
        ids, valid = right_align(ids, mask, bucket(int(mask.sum(1).max())), gen.pad_token_id)
        seen = seen_from_ids(ids, valid, self._llm_cfg.vocab_size)
        with self._sharded():
            x = llm.embed(self._llm_params, self._llm_cfg, jnp.asarray(ids))
            tokens, _ = generate_from_embeds(self._llm_params, x, jnp.asarray(valid), jnp.asarray(seen),
                                             sample_rng(seed), cfg=self._llm_cfg, gen=gen)
        return np.asarray(tokens)

    @property
    def _llm_cfg(self):
        return self.family.llm_config(self.config)

    @property
    def _llm_params(self):
        return self.params.get("llm", self.params)

    # ------------------------------------------------------------------ video side

    def frames(self, video: Any, *, fps: float | None = None, max_frames: int | None = None,
               min_frames: int | None = None, duplicate_to_min: bool | None = None, start: float | None = None,
               end: float | None = None) -> VideoFrames:
        """Sample a video (file, image folder, VideoFrames, or uint8 (T, H, W, 3) with fps=) with the family's defaults."""
        sampling = self.family.sampling(self.config)
        if sampling is None:
            raise ConfigError(f"{self.source}: a text-only {self.family.name} model takes no video (use generate)")
        if isinstance(video, VideoFrames):
            return video
        if _is_image(video):
            return _image_frames(video)
        if isinstance(video, np.ndarray):
            return _array_frames(video, fps)
        s = sampling.replace(fps=fps, max_frames=max_frames, duplicate_to_min=duplicate_to_min)
        min_frames = min(s.min_frames, s.max_frames) if min_frames is None else min_frames
        if min_frames > s.max_frames:
            raise ConfigError(f"min_frames={min_frames} is more than max_frames={s.max_frames}")
        return load_frames(video, fps=s.fps or 1.0, local_num_frames=s.frame_multiple, max_num_frames=s.max_frames,
                           min_num_frames=min_frames, start=start, end=end, duplicate_to_min=s.duplicate_to_min,
                           rule=s.rule, max_fps=s.max_fps)

    def encode_video(self, video: Any, *, fps: float | None = None, max_frames: int | None = None,
                     min_frames: int | None = None, duplicate_to_min: bool | None = None, start: float | None = None,
                     end: float | None = None, intermediates: bool = False, **options) -> Encoded:
        """Sample and encode a video; `intermediates=True` keeps the named stage outputs in `Encoded.stages`."""
        t0 = time.perf_counter()
        frames = self.frames(video, fps=fps, max_frames=max_frames, min_frames=min_frames,
                             duplicate_to_min=duplicate_to_min, start=start, end=end)
        t_read = time.perf_counter() - t0
        with self._sharded():
            encoded = self.family.encode(self.params, self.config, frames, intermediates=intermediates, **options)
        encoded.seconds = {"read": t_read, **encoded.seconds}
        return encoded

    def answer(self, video: Any, question: str, *, fps: float | None = None, max_frames: int | None = None,
               min_frames: int | None = None, duplicate_to_min: bool | None = None, start: float | None = None,
               end: float | None = None, **options) -> tuple[str, dict]:
        """Answer a question about a video or an image. Returns (text, report).

        options: history, max_new_tokens, seed, do_sample and generation options (temperature, top_p,
        top_k, repetition_penalty), and the family's own (`family.answer_options`, e.g. compression, qc).
        """
        self.family.check_options({k: v for k, v in options.items() if k not in _SHARED_OPTIONS})
        family_opts = {k: options[k] for k in self.family.answer_options if k in options}
        encoded = self.encode_video(video, fps=fps, max_frames=max_frames, min_frames=min_frames,
                                    duplicate_to_min=duplicate_to_min, start=start, end=end,
                                    **{k: v for k, v in family_opts.items() if k in _ENCODE_OPTIONS})
        return self.answer_encoded(encoded, question, **options)

    def answer_encoded(self, encoded: Encoded, question: str, *, history: Sequence[tuple[str, str]] = (),
                       max_new_tokens: int | None = None, seed: int | None = 0, do_sample: bool = False,
                       temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                       repetition_penalty: float | None = None, **options) -> tuple[str, dict]:
        """Answer from an already encoded video (reusing its caches where the family can).

        Greedy by default, as the original evaluations run; `do_sample=True` samples with
        generation_config.json's temperature/top-p/top-k unless overridden. The repetition
        penalty of generation_config.json applies in both cases, as in the original `chat()`.
        """
        self.family.check_options(options)
        gen = self.generation.replace(max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS, do_sample=do_sample,
                                      temperature=temperature, top_p=top_p, top_k=top_k,
                                      repetition_penalty=repetition_penalty)
        with self._sharded():
            tokens, report = self.family.answer_encoded(self, encoded, question, history=history, gen=gen, seed=seed,
                                                        **options)
        tokens = [int(t) for t in tokens]
        stop = next((i for i, t in enumerate(tokens) if t in gen.eos_token_ids), len(tokens))
        text = self.tokenizer.decode(tokens[:stop], skip_special_tokens=True).strip()
        report = {"frames": encoded.num_frames, **{f"seconds_{k}": round(v, 4) for k, v in encoded.seconds.items()},
                  **report, "token_ids": tokens}
        return text, report


_SHARED_OPTIONS = frozenset({"history", "max_new_tokens", "seed", "do_sample", "temperature", "top_p", "top_k",
                             "repetition_penalty"})
_ENCODE_OPTIONS = frozenset({"qc"})  # family options that also shape the encoding


@functools.partial(jax.jit, static_argnames=("cfg",))
def _logits(params, ids, mask, *, cfg):
    hidden = llm.prefill(params, cfg, llm.embed(params, cfg, ids), mask)[0]
    return llm.head(params, cfg, hidden)


def _is_image(media: Any) -> bool:
    """An image file path or a single (H, W, 3) array (videos are (T, H, W, 3), folders or video files)."""
    if isinstance(media, (str, os.PathLike)):
        return os.path.isfile(media) and str(media).lower().endswith(IMAGE_EXTENSIONS)
    return isinstance(media, np.ndarray) and media.ndim == 3


def _image_frames(image: Any) -> VideoFrames:
    """One image as a one-frame `VideoFrames` (method 'image': no time message)."""
    source = "<image>"
    if isinstance(image, (str, os.PathLike)):
        source = str(image)
        try:
            with Image.open(image) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise VideoError(f"{source}: not a readable image ({e})") from None
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise VideoError(f"{source}: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    return VideoFrames(image[None], np.zeros(1, np.int64), 1.0, 0.0, 1, "", np.zeros(1), source, "image")


def _array_frames(frames: np.ndarray, fps: float | None) -> VideoFrames:
    """Already-sampled uint8 frames (T, H, W, 3) at `fps` frames/s, used as given."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(f"<array>: expected uint8 frames (T, H, W, 3) with T > 0, got {frames.dtype} {frames.shape}")
    if fps is None or not fps > 0:
        raise VideoError(f"<array>: already-sampled frames need their rate, fps= (got {fps!r})")
    t = len(frames)
    return VideoFrames(frames, np.arange(t), float(fps), t / fps, t, time_message(t / fps, t), np.arange(t) / fps)
