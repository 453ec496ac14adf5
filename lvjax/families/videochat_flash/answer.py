"""VideoChat-Flash / XComp from encoded frames to generated tokens.

Stages (each timed in the report): vision (UMT ViT), merge (ToMe + projector), prefill,
decode. Frame counts are padded to buckets (`frame_bucket`) and the padded clips' visual
tokens masked, so answering videos of different lengths compiles each stage once per bucket;
attention-scored drops (whose kept count depends on the real token count) run unpadded.

Prompt layout (static shapes), packed (`llm.prefill`): the padding lies behind every real token,
so the plain causal attention layout is exact and the kernels / blockwise path compile once per
bucket too. With a plan that does not depend on the question (none, suffix/uniform rules) the
prefill is [text before <image>] [visual slots: real | bucket padding], its caches (padding
slots masked) are kept in `Encoded.cache`, and a question then runs only its own tokens; else
the row is [text before <image>] [visual slots, all real] [text after <image>] [padding].
"""

from __future__ import annotations

import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import ConfigError
from lvjax.families.base import Encoded
from lvjax.families.videochat_flash import model as vcf
from lvjax.families.videochat_flash.compression import build_plan
from lvjax.families.videochat_flash.drops import KeepStatic, drops_for_plan
from lvjax.families.videochat_flash.selection import QCCompConfig, select_frames_qc
from lvjax.generate import (
    GenerationConfig,
    bucket,
    decode_from_cache,
    extend_cache,
    prefill_cache,
    sample_rng,
)
from lvjax.models import llm
from lvjax.prompt import build_prompt, tokenize_with_image
from lvjax.video.preprocess import preprocess


def frame_bucket(n: int, multiple: int) -> int:
    """Frames after bucket padding: n rounded up to `multiple`, then to a power of two ≥ 16 (multiples of 512 above 512)."""
    n = -(-n // multiple) * multiple
    size = 16
    while size < n and size < 512:
        size *= 2
    size = size if size >= n else -(-n // 512) * 512
    return -(-size // multiple) * multiple


@functools.partial(jax.jit, static_argnames=("cfg", "clip_batch"))
def _vision(params, clips, *, cfg, clip_batch):
    return vcf.vision_features(params, cfg, clips, clip_batch)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _merge(params, feats, *, cfg):
    return vcf.merge_and_project(params, cfg, feats, return_stages=True)


@functools.partial(jax.jit, static_argnames=("cfg", "visual_start"))
def _splice(params, ids, visual, *, cfg, visual_start):
    return vcf.splice(params, cfg, ids, visual, visual_start)


def pad_to_clips(frames_u8: np.ndarray, clip_len: int) -> np.ndarray:
    """Repeat the last frame up to a multiple of the clip length L (the original pads its frame list so)."""
    if len(frames_u8) % clip_len:
        frames_u8 = np.concatenate([frames_u8, np.repeat(frames_u8[-1:], clip_len - len(frames_u8) % clip_len, axis=0)])
    return frames_u8


def encode_frames(params: dict, cfg: vcf.VideoChatFlashConfig, frames_u8: np.ndarray, *, clip_len: int,
                  bucketed: bool = True, clip_batch: int = 8, intermediates: bool = False):
    """uint8 frames (T, H, W, 3) → (visual tokens (Tb·16, D), real token count, seconds, stages).

    T is padded to clips of `clip_len` by repeating the last frame (as the original), then with
    black frames up to `frame_bucket` (their tokens are bucket padding, masked downstream).
    """
    t0 = time.perf_counter()
    frames_u8 = pad_to_clips(frames_u8, clip_len)
    n_valid = len(frames_u8) * cfg.tokens_per_frame
    if bucketed:
        tb = frame_bucket(len(frames_u8), clip_len)
        frames_u8 = np.concatenate([frames_u8, np.zeros((tb - len(frames_u8),) + frames_u8.shape[1:], np.uint8)])
    pixels = preprocess(frames_u8, cfg.vision.image_size)
    clips = jnp.asarray(pixels.reshape((-1, clip_len) + pixels.shape[1:]))
    feats = _vision(params, clips, cfg=cfg, clip_batch=clip_batch)
    feats.block_until_ready()
    t1 = time.perf_counter()
    visual, merge = _merge(params, feats, cfg=cfg)
    visual.block_until_ready()
    seconds = {"vision": t1 - t0, "merge": time.perf_counter() - t1}
    stages = {}
    if intermediates:
        stages = {"pixels": pixels, "vision": feats, "merge_assign": merge["merge_assign"],
                  "merged": merge["merged"], "projector": visual}
    return visual, n_valid, seconds, stages


def encode(params: dict, cfg: vcf.VideoChatFlashConfig, frames, *, intermediates: bool = False,
           qc: QCCompConfig | None = None) -> Encoded:
    """Sampled `VideoFrames` → `Encoded` (an image is one clip of one frame, as the original's ver7 path).

    With QC-Comp active for this many frames the ViT is not run here: selection encodes the
    frames it scores (see `answer_encoded`).
    """
    image = frames.method == "image"
    if qc is not None and not image and len(frames) >= qc.threshold:
        return Encoded(None, frames, {})
    clip_len = 1 if image else cfg.local_num_frames
    visual, n_valid, seconds, stages = encode_frames(params, cfg, frames.frames, clip_len=clip_len,
                                                     intermediates=intermediates)
    return Encoded(visual, frames, seconds, stages, n_valid=n_valid)


def plan(cfg: vcf.VideoChatFlashConfig, name: str):
    """A `CompressionPlan` by name; the VideoChat-Flash rules take layers/ratios from config.json."""
    kw = {}
    if name in ("uniform", "attention", "uniform0_attention", "uniform1_attention") and cfg.compress_layers:
        kw = dict(layers=cfg.compress_layers, ratios=cfg.compress_ratios)
    try:
        return build_plan(name, cfg.llm.num_hidden_layers, cfg.tokens_per_frame, **kw)
    except ValueError as e:
        raise ConfigError(f"compression: {e}") from None


def drops(cfg: vcf.VideoChatFlashConfig, plan_name: str, n_visual: int) -> tuple:
    """The static drop tuple of a compression plan for a visual block of n_visual tokens."""
    return drops_for_plan(plan(cfg, plan_name), cfg.llm, n_visual)


def prompt_ids(tokenizer, question: str, time_msg: str, history: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids before and after the <image> placeholder of the chat prompt."""
    if not question or not question.strip():
        raise ConfigError("the question is empty")
    ids, index = tokenize_with_image(build_prompt(question, time_msg=time_msg, history=history), tokenizer)
    return list(ids[:index]), list(ids[index + 1:])


def layout(pad_id: int, prefix: list[int], n_slots: int, n_valid: int, suffix: list[int], pad_to: int):
    """ids/valid (1, S) = [prefix][n_slots visual, the first n_valid real][suffix][padding to pad_to].

    Packed: the padding lies behind every real token, so bucket padding inside the visual block
    (n_valid < n_slots) comes with no suffix.
    """
    if suffix and n_valid < n_slots:
        raise ValueError("bucket padding in the visual block is packed only without text after it")
    v = len(prefix) + n_slots
    ids = np.full((1, v + pad_to), pad_id, np.int32)
    valid = np.zeros(ids.shape, bool)
    ids[0, : len(prefix)] = prefix
    valid[0, : len(prefix) + n_valid] = True
    ids[0, v: v + len(suffix)] = suffix
    valid[0, v: v + len(suffix)] = True
    return ids, valid


def answer_encoded(model, encoded: Encoded, question: str, *, history: Sequence[tuple[str, str]] = (),
                   gen: GenerationConfig, seed: int | None = 0, compression: str | None = None,
                   qc: QCCompConfig | None = None) -> tuple[np.ndarray, dict]:
    """Prompt + staged LLM (LP-Comp drops) + decoding → (token ids (N,), report)."""
    cfg = model.config
    prefix, suffix = prompt_ids(model.tokenizer, question, encoded.frames.time_msg, history)
    plan_name = compression or cfg.default_compression
    report: dict = {}
    visual, n_valid = encoded.visual, encoded.n_valid
    use_qc = qc is not None and encoded.frames.method != "image" and encoded.num_frames >= qc.threshold
    if qc is not None and not use_qc:
        report["qc_skipped"] = f"{encoded.num_frames} frames < QC-Comp threshold {qc.threshold}"
    if use_qc:
        encode_fn = functools.partial(encode_frames, model.params, cfg, clip_len=cfg.local_num_frames, bucketed=False)
        visual, qc_report = select_frames_qc(model.params, cfg, model.tokenizer, encoded.frames.frames, prefix, suffix,
                                             functools.partial(drops, cfg, plan_name), encode_fn, qc)
        n_valid = int(visual.shape[0])
        report.update(qc_report)
    plan_drops = drops(cfg, plan_name, int(visual.shape[0]))
    question_dependent = any(not isinstance(d.select, KeepStatic) for d in plan_drops)
    if question_dependent and n_valid < visual.shape[0]:  # the kept count depends on the real tokens: no bucket
        visual = visual[:n_valid]
        plan_drops = drops(cfg, plan_name, n_valid)
    report.update(visual_tokens=n_valid, prompt_tokens=len(prefix) + n_valid + len(suffix), compression=plan_name)
    t0 = time.perf_counter()
    if question_dependent or use_qc:
        last, caches = _prefill_whole(model, visual, n_valid, prefix, suffix, plan_drops, gen)
    else:
        last, caches = _prefill_reusing(model, encoded, prefix, suffix, plan_drops, gen)
    last.block_until_ready()
    t1 = time.perf_counter()
    # Tokens each layer attended over in this prefill (padding excluded), read from the stage caches.
    report["layer_seq_len"] = [int(c.valid.sum()) for c in caches for _ in c.k]
    seen = jnp.zeros((1, cfg.llm.vocab_size), bool)  # the original generates from embeddings only
    tokens, lengths = decode_from_cache(model.params["llm"], last, caches, seen, sample_rng(seed),
                                        cfg=cfg.llm, gen=gen)
    tokens = np.asarray(tokens)[0]
    report.update(seconds_prefill=round(t1 - t0, 4), seconds_decode=round(time.perf_counter() - t1, 4),
                  new_tokens=int(np.asarray(lengths)[0]))
    return tokens[: report["new_tokens"]], report


def _prefill_whole(model, visual, n_valid, prefix, suffix, plan_drops, gen):
    cfg = model.config
    n_suffix, n_slots = bucket(len(suffix)), int(visual.shape[0])
    ids, valid = layout(model.generation.pad_token_id, prefix, n_slots, n_valid, suffix, n_suffix)
    x = _splice(model.params, jnp.asarray(ids), visual[None], cfg=cfg, visual_start=len(prefix))
    return prefill_cache(model.params["llm"], x, jnp.asarray(valid), cfg=cfg.llm, max_new=gen.max_new_tokens,
                         drops=plan_drops, visual_start=len(prefix), n_visual=n_slots, packed=True)


def _prefill_reusing(model, encoded, prefix, suffix, plan_drops, gen):
    cfg = model.config
    visual, n_valid = encoded.visual, encoded.n_valid
    n_suffix, n_slots = bucket(len(suffix)), int(visual.shape[0])
    budget = n_suffix + gen.max_new_tokens
    key = (tuple(prefix), plan_drops)
    cached = encoded.cache.get(key)
    if cached is None or cached[1] < budget:
        ids, valid = layout(model.generation.pad_token_id, prefix, n_slots, n_valid, [], 0)
        x = _splice(model.params, jnp.asarray(ids), visual[None], cfg=cfg, visual_start=len(prefix))
        budget = max(budget, 2 * n_suffix + gen.max_new_tokens)  # room for longer follow-up questions
        _, caches = prefill_cache(model.params["llm"], x, jnp.asarray(valid), cfg=cfg.llm, max_new=budget,
                                  drops=plan_drops, visual_start=len(prefix), n_visual=n_slots, packed=True)
        encoded.cache[key] = (caches, budget)
    caches = encoded.cache[key][0]
    ids = np.full((1, n_suffix), model.generation.pad_token_id, np.int32)
    valid = np.zeros((1, n_suffix), bool)
    ids[0, n_suffix - len(suffix):], valid[0, n_suffix - len(suffix):] = suffix, True
    x = _embed(model.params["llm"], jnp.asarray(ids), cfg=cfg.llm)
    return extend_cache(model.params["llm"], caches, x, jnp.asarray(valid), cfg=cfg.llm)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _embed(params, ids, *, cfg):
    return llm.embed(params, cfg, ids)
