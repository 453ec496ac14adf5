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
from tqdm import tqdm

from lvjax.config import ConfigError, _is_int, _is_number, check_generation
from lvjax.errors import UsageError
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
# Text a question may not hold unless `allow_special_tokens=True`: it would forge chat turns or the video slot.
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>")


def check_text(text: Any, what: str, special: Sequence[str] = CONTROL_TOKENS, allow_special_tokens: bool = False) -> str:
    """`text` if it is a non-empty UTF-8 str without chat control tokens (unless allowed); UsageError naming `what`."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{what} is not valid UTF-8 (undecodable byte at character {e.start})") from None
    if not text.strip():
        raise UsageError(f"{what} is empty")
    if not allow_special_tokens:
        found = next((t for t in special if t and t in text), None)
        if found is not None:
            raise UsageError(f"{what} contains the control token {found!r} (pass allow_special_tokens=True / "
                             "--allow-special-tokens to send it as is)")
    return text


def check_sampling_options(fps=None, max_frames=None, min_frames=None, start=None, end=None) -> None:
    """UsageError naming the option when a frame-sampling option is of the wrong type or range (None = default)."""
    if fps is not None and not (_is_number(fps) and fps > 0):
        raise UsageError(f"fps={fps!r} must be a positive number of frames per second")
    for name, value in (("max_frames", max_frames), ("min_frames", min_frames)):
        if value is not None and not (_is_int(value) and value >= 1):
            raise UsageError(f"{name}={value!r} must be an integer >= 1")
    if max_frames is not None and min_frames is not None and min_frames > max_frames:
        raise UsageError(f"min_frames={min_frames} is more than max_frames={max_frames}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and not (_is_number(value) and value >= 0):
            raise UsageError(f"{name}={value!r} must be a time in seconds >= 0")
    if start is not None and end is not None and end <= start:
        raise UsageError(f"end={end} must be after start={start}")


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
    def has_tokenizer_files(self) -> bool:
        return any(os.path.isfile(os.path.join(self.source, f)) for f in ("tokenizer.json", "tokenizer_config.json"))

    @property
    def tokenizer(self):
        """The `transformers.AutoTokenizer` of the source folder (loaded on first use)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # heavy; only when text is needed

            if not self.has_tokenizer_files:
                raise ConfigError(f"{self.source}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
            try:
                tok = AutoTokenizer.from_pretrained(self.source)
            except Exception as e:  # transformers/tokenizers raise many types for a bad file  # noqa: BLE001
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise ConfigError(f"{self.source}: the tokenizer files cannot be loaded ({reason})") from None
            if self.family.sampling(self.config) is not None:  # a chat model: the template's tokens must exist
                for token in CONTROL_TOKENS[:2]:
                    ids = tok.convert_tokens_to_ids(token)
                    if not _is_int(ids) or ids == tok.unk_token_id or list(tok(token, add_special_tokens=False).input_ids) != [ids]:
                        raise ConfigError(f"{self.source}: the tokenizer does not encode the chat template's {token!r} "
                                          "as one token (tokenizer.json / added_tokens)")
            self._tokenizer = tok
        return self._tokenizer

    def check_ids(self, ids: np.ndarray, max_new_tokens: int = 0) -> None:
        """UsageError unless token ids lie in [0, vocab_size) and prompt + new tokens fit max_position_embeddings."""
        cfg = self._llm_cfg
        if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            raise UsageError(f"token ids must lie in [0, {cfg.vocab_size}), got {int(ids.min())}..{int(ids.max())}")
        self._check_context(ids.shape[-1], max_new_tokens)

    def _check_context(self, n_prompt: int, max_new_tokens: int) -> None:
        limit = self._llm_cfg.max_position_embeddings
        if n_prompt + max_new_tokens > limit:
            raise UsageError(f"the prompt ({n_prompt} tokens) + max_new_tokens={max_new_tokens} exceed the model's "
                             f"context, max_position_embeddings={limit}")

    def logits(self, input_ids, attention_mask=None) -> np.ndarray:
        """input_ids (B, T) → fp32 logits (B, T, V) of the language model; padding (mask 0) on either side."""
        ids = np.asarray(input_ids, np.int32)
        mask = np.ones_like(ids, bool) if attention_mask is None else np.asarray(attention_mask, bool)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise UsageError(f"input_ids must be (B, T) and attention_mask the same shape; got {ids.shape}, {mask.shape}")
        self.check_ids(ids)
        with self._sharded():
            return np.asarray(_logits(self._llm_params, jnp.asarray(ids), jnp.asarray(mask), cfg=self._llm_cfg))

    def generate(self, input_ids, attention_mask=None, *, max_new_tokens: int | None = None, seed: int | None = None,
                 **options) -> np.ndarray:
        """Continue each text prompt; returns new tokens (B, max_new_tokens), `pad_token_id` after a stop token.

        options: do_sample, temperature, top_p, top_k, repetition_penalty, eos_token_ids, pad_token_id
        (defaults from generation_config.json, greedy unless it says otherwise).
        """
        check_generation({"max_new_tokens": max_new_tokens, "seed": seed, **options}, "generate()", UsageError)
        gen = self.generation.replace(max_new_tokens=max_new_tokens, **options)
        ids = np.asarray(input_ids, np.int32)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise UsageError(f"input_ids must be a non-empty (B, T) array, got shape {ids.shape}")
        self.check_ids(ids, gen.max_new_tokens)
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
               end: float | None = None, progress: bool = False) -> VideoFrames:
        """Sample a video (file, image folder, VideoFrames, or uint8 (T, H, W, 3) with fps=) with the family's defaults.

        progress: a bar over the decoded frames (files only).
        """
        sampling = self.family.sampling(self.config)
        if sampling is None:
            raise ConfigError(f"{self.source}: a text-only {self.family.name} model takes no video (use generate)")
        check_sampling_options(fps, max_frames, min_frames, start, end)
        if isinstance(video, VideoFrames):
            return video
        if _is_image(video):
            return _image_frames(video)
        if isinstance(video, np.ndarray):
            return _array_frames(video, fps)
        s = sampling.replace(fps=fps, max_frames=max_frames, duplicate_to_min=duplicate_to_min)
        min_frames = min(s.min_frames, s.max_frames) if min_frames is None else min_frames
        if min_frames > s.max_frames:
            raise UsageError(f"min_frames={min_frames} is more than max_frames={s.max_frames}")
        kw = dict(fps=s.fps or 1.0, local_num_frames=s.frame_multiple, max_num_frames=s.max_frames,
                  min_num_frames=min_frames, start=start, end=end, duplicate_to_min=s.duplicate_to_min, rule=s.rule,
                  max_fps=s.max_fps)
        if not (progress and isinstance(video, (str, os.PathLike)) and os.path.isfile(video)):
            return load_frames(video, **kw)
        with tqdm(desc="decoding", unit="frame", leave=False) as bar:
            def update(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            return load_frames(video, progress=update, **kw)

    def encode_video(self, video: Any, *, fps: float | None = None, max_frames: int | None = None,
                     min_frames: int | None = None, duplicate_to_min: bool | None = None, start: float | None = None,
                     end: float | None = None, intermediates: bool = False, progress: bool = False,
                     **options) -> Encoded:
        """Sample and encode a video; `intermediates=True` keeps the named stage outputs in `Encoded.stages`."""
        t0 = time.perf_counter()
        frames = self.frames(video, fps=fps, max_frames=max_frames, min_frames=min_frames,
                             duplicate_to_min=duplicate_to_min, start=start, end=end, progress=progress)
        t_read = time.perf_counter() - t0
        with self._sharded():
            encoded = self.family.encode(self.params, self.config, frames, intermediates=intermediates, **options)
        encoded.seconds = {"read": t_read, **encoded.seconds}
        return encoded

    def answer(self, video: Any, question: str, *, fps: float | None = None, max_frames: int | None = None,
               min_frames: int | None = None, duplicate_to_min: bool | None = None, start: float | None = None,
               end: float | None = None, progress: bool = False, **options) -> tuple[str, dict]:
        """Answer a question about a video or an image. Returns (text, report).

        options: history, max_new_tokens, seed, do_sample and generation options (temperature, top_p,
        top_k, repetition_penalty), and the family's own (`family.answer_options`, e.g. compression, qc).
        """
        self.family.check_options({k: v for k, v in options.items() if k not in _SHARED_OPTIONS})
        check_generation({k: options.get(k) for k in _GENERATION_OPTIONS}, "answer()", UsageError)  # before the video
        self.check_question(question, options.get("history", ()), options.get("allow_special_tokens", False),
                            options.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        family_opts = {k: options[k] for k in self.family.answer_options if k in options}
        encoded = self.encode_video(video, fps=fps, max_frames=max_frames, min_frames=min_frames,
                                    duplicate_to_min=duplicate_to_min, start=start, end=end, progress=progress,
                                    **{k: v for k, v in family_opts.items() if k in _ENCODE_OPTIONS})
        return self.answer_encoded(encoded, question, **options)

    def answer_encoded(self, encoded: Encoded, question: str, *, history: Sequence[tuple[str, str]] = (),
                       max_new_tokens: int | None = None, seed: int | None = 0, do_sample: bool = False,
                       temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                       repetition_penalty: float | None = None, allow_special_tokens: bool = False,
                       **options) -> tuple[str, dict]:
        """Answer from an already encoded video (reusing its caches where the family can).

        Greedy by default, as the original evaluations run; `do_sample=True` samples with
        generation_config.json's temperature/top-p/top-k unless overridden. The repetition
        penalty of generation_config.json applies in both cases, as in the original `chat()`.
        max_new_tokens: default 512. The question (and history) may not hold chat control tokens
        (`CONTROL_TOKENS`, the tokenizer's special tokens) unless `allow_special_tokens=True`.
        """
        self.family.check_options(options)
        check_generation({"max_new_tokens": max_new_tokens, "seed": seed, "do_sample": do_sample, "temperature": temperature,
                          "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty}, "answer()", UsageError)
        self.check_question(question, history, allow_special_tokens, max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
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


    def check_question(self, question: Any, history: Sequence[tuple[str, str]] = (), allow_special_tokens: bool = False,
                       max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        """UsageError for a question (or history turn) that is not a non-empty UTF-8 str, holds control tokens
        (unless allowed), or whose tokens + max_new_tokens do not fit max_position_embeddings — before any prefill."""
        if not isinstance(allow_special_tokens, bool):
            raise UsageError(f"allow_special_tokens={allow_special_tokens!r} must be true or false")
        limit = self._llm_cfg.max_position_embeddings
        special = (*CONTROL_TOKENS, *getattr(self.tokenizer, "all_special_tokens", ()))
        texts = [check_text(question, "question", special, allow_special_tokens)]
        if isinstance(history, (str, bytes)) or not all(isinstance(t, (tuple, list)) and len(t) == 2 for t in history):
            raise UsageError("history must be a sequence of (question, answer) pairs")
        for i, (q, a) in enumerate(history):
            texts += [check_text(q, f"history[{i}] question", special, allow_special_tokens),
                      check_text(a, f"history[{i}] answer", special, allow_special_tokens)]
        n_chars = sum(map(len, texts))
        if n_chars > 16 * limit:  # no tokenizer packs more than 16 characters in a token: refuse without tokenizing
            raise UsageError(f"the question ({n_chars} characters) exceeds the model's context, "
                             f"max_position_embeddings={limit} tokens")
        n_tokens = sum(len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
        self._check_context(n_tokens, max_new_tokens)


_SHARED_OPTIONS = frozenset({"history", "max_new_tokens", "seed", "do_sample", "temperature", "top_p", "top_k",
                             "repetition_penalty", "allow_special_tokens"})
_GENERATION_OPTIONS = ("max_new_tokens", "seed", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
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
