"""Video-XL-2 (VectorSpaceLab/Video-XL, Video-XL-2/): SigLIP → DTS → projector → pool front end,
timestamped groups of 144 visual tokens, a Qwen2 LLM with chunk-sparse prefill and bi-level
KV decoding (see `modes` for the three evaluation trees and their options).

Parameter tree: {'llm': Qwen2 tree} + the front end's {'vision_tower', 'sae', 'mm_projector'}
(lvjax/models/dts_frontend.py, shared with Video-XL-Pro) + 'text_mlp' (stored by the checkpoint,
unused by Video-XL-2; kept so an export has the original's keys).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvjax.config import ConfigError, LLMConfig
from lvjax.convert.llm import llm_rules
from lvjax.convert.table import LINEAR, Rule
from lvjax.families.base import Encoded, Family, Sampling, TrainingMedia
from lvjax.families.registry import register
from lvjax.families.video_xl2 import modes, runner
from lvjax.families.video_xl2.config import VideoXL2Config
from lvjax.families.video_xl2.loss import time_ids, video_ce
from lvjax.families.video_xl2.spans import visual_spans
from lvjax.families.video_xl2.sparse import visited_fraction
from lvjax.generate import GenerationConfig, sample_rng
from lvjax.models import dts_frontend as fe
from lvjax.models import llm
from lvjax.models.qwen2 import Qwen2
from lvjax.prompt import build_prompt, tokenize_with_image
from lvjax.video.sampling import rounded_timestamps

TOKENS_PER_GROUP = 144  # visual tokens per group of 4 frames
VISION_PAD = "<|vision_pad|>"


def time_token_ids(tokenizer: Any) -> dict[str, int]:
    """The ids the original hard-codes (real Qwen2.5: "Time" 1462, ':' 25, <|vision_pad|> 151654)."""
    def one(text: str) -> int:
        ids = list(tokenizer(text, add_special_tokens=False).input_ids)
        if len(ids) != 1:
            raise ConfigError(f"video_xl2: the tokenizer splits {text!r} into {ids} (the original needs one id)")
        return int(ids[0])

    pad = tokenizer.convert_tokens_to_ids(VISION_PAD)
    if pad is None or pad == tokenizer.unk_token_id:
        raise ConfigError(f"video_xl2: the tokenizer has no {VISION_PAD} token")
    return {"time_id": one("Time"), "colon_id": one(":"), "pad_id": int(pad)}


def answer_from_embeds(params: dict, cfg: LLMConfig, embeds: np.ndarray, spans, mode: modes.Mode,
                       gen: GenerationConfig, seed: int | None = None, return_logits: bool = False):
    """The LLM side of one answer: spliced embeddings (L, D) → (tokens (N,), lengths, logits dict)."""
    layout, plan = modes.layout_and_plan(spans, mode)
    seen = jnp.zeros((1, cfg.vocab_size), bool)  # the original generates from embeddings: no prompt ids seen
    tokens, lengths, logits = runner.generate(params, jnp.asarray(embeds)[None], seen, sample_rng(seed), cfg=cfg,
                                              gen=gen, layout=layout, plan=plan, suffix_start=spans.visual_end,
                                              return_logits=return_logits)
    return np.asarray(tokens[0]), int(lengths[0]), jax.tree.map(lambda a: np.asarray(a[0]), logits)


class VideoXL2Family(Family):
    name = "video_xl2"
    answer_options = modes.OPTIONS

    def claims(self, hf: dict, keys: frozenset[str]) -> bool:
        """llava_qwen with a DTS encoder (`model.sae.*`) and no Video-XL-Pro selector / Video-XL beacons."""
        if hf.get("model_type") != "llava_qwen" or any(k.startswith("beacon_") for k in hf):
            return False
        return any(k.startswith("model.sae.") for k in keys) and not any("WindowTimeToTokenAttention" in k for k in keys)

    def config_from_hf(self, hf: dict, source: str) -> VideoXL2Config:
        return VideoXL2Config.from_hf(hf, source)

    def config_to_hf(self, cfg: VideoXL2Config) -> dict:
        return cfg.to_hf()

    def llm_config(self, cfg: VideoXL2Config) -> LLMConfig:
        return cfg.llm

    def with_dtypes(self, cfg: VideoXL2Config, dtype: str, param_dtype: str,
                    remat_policy: str | None = None) -> VideoXL2Config:
        llm_cfg = cfg.llm.replace(dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy or cfg.llm.remat_policy)
        return cfg.replace(llm=llm_cfg,
                           frontend=cfg.frontend.with_dtypes(dtype, param_dtype))

    def describe(self, cfg) -> dict:
        return {**super().describe(cfg), "vision": cfg.frontend.describe()}

    def rules(self, cfg: VideoXL2Config) -> list:
        text_mlp = [Rule("model.text_mlp.0.weight", "text_mlp/kernel", LINEAR), Rule("model.text_mlp.0.bias", "text_mlp/bias")]
        return llm_rules(cfg.llm, root="llm/") + fe.frontend_rules(cfg.frontend) + text_mlp

    def init(self, cfg: VideoXL2Config, key: jax.Array) -> dict:
        k1, k2, k3 = jax.random.split(key, 3)
        d = cfg.llm.hidden_size
        text_mlp = nn.Dense(d, kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "embed_out")),
                            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed_out",)))
        return {"llm": Qwen2(cfg.llm).init(k1, jnp.zeros((1, 1), jnp.int32))["params"],
                **fe.init_frontend(cfg.frontend, k2), "text_mlp": text_mlp.init(k3, jnp.zeros((1, d)))["params"]}

    def side_folders(self, hf: dict) -> tuple[str, ...]:
        return (fe.VISION_FOLDER,)

    def write_side_folders(self, out: str, cfg: VideoXL2Config, tensors: dict[str, np.ndarray]) -> None:
        fe.write_vision_folder(out, cfg.frontend, tensors)

    def sampling(self, cfg: VideoXL2Config) -> Sampling:
        """lmms-eval `load_video(fps=1, max_fps=4, max_frames_num=256)` (the MLVU script), groups of 4."""
        return Sampling(rule="fps_max", fps=1.0, max_fps=4.0, max_frames=256, frame_multiple=4)

    def visual_tokens_per_frame(self, cfg: VideoXL2Config) -> float:
        return TOKENS_PER_GROUP / 4

    def encode(self, params: dict, cfg: VideoXL2Config, frames, *, intermediates: bool = False, **options) -> Encoded:
        """Frames → `Encoded` with visual = {'pooled': (G, 144, D), 'timestamps': rounded seconds (F,)};
        frames are padded to groups of 4 by repeating the last one (Video-XL-2)."""
        t0 = time.perf_counter()
        pixels = fe.preprocess_frames(frames.frames, cfg.frontend)
        pooled, stages = fe.encode_groups(params, cfg.frontend, pixels, fe.pad_counts_last(len(frames)),
                                          intermediates=intermediates)
        pooled = jax.block_until_ready(pooled)
        visual = {"pooled": pooled, "timestamps": rounded_timestamps(frames.timestamps)}
        return Encoded(visual, frames, {"vision": time.perf_counter() - t0}, dict(stages, pixels=pixels) if intermediates else {})

    def prompt_embeds(self, model, encoded: Encoded, question: str, history: Sequence[tuple[str, str]] = ()):
        """The spliced LLM input (L, D) and its `VisualSpans` (qwen_1_5 prompt, timestamped groups)."""
        ids, image_at = tokenize_with_image(build_prompt(question, "", history), model.tokenizer)
        special = time_token_ids(model.tokenizer)
        llm_params, cfg = model.params["llm"], model.config.llm
        time_ids = fe.time_prompt_ids(model.tokenizer, encoded.visual["timestamps"], fe.XL2_TIME_FORMAT, special["pad_id"],
                                      model.config.frontend.tokens_per_group)
        embed = lambda part: llm.embed(llm_params, cfg, jnp.asarray([part], jnp.int32))[0]  # noqa: E731
        visual = fe.visual_sequence(embed(time_ids), time_ids, encoded.visual["pooled"], special["pad_id"])
        embeds = fe.splice(embed(ids[:image_at]), visual, embed(ids[image_at + 1:]))
        spans = visual_spans(time_ids, image_at, embeds.shape[0], encoded.num_frames, **special)
        return embeds, spans

    def answer_encoded(self, model, encoded: Encoded, question: str, *, history: Sequence[tuple[str, str]] = (),
                       gen: GenerationConfig, seed: int | None = None, **options) -> tuple[np.ndarray, dict]:
        self.check_options(options)
        mode = modes.resolve(**options)
        embeds, spans = self.prompt_embeds(model, encoded, question, history)
        t0 = time.perf_counter()
        tokens, n, _ = answer_from_embeds(model.params["llm"], model.config.llm, embeds, spans, mode, gen, seed)
        # Prefill and decoding are one jitted call: its time is reported as prefill. Visited blocks: of the
        # prefill layout at 512² tiles (the TPU kernels' and CPU blockwise path's), over the causal layout's.
        report = {"visual_tokens": int(spans.visual_end - spans.visual_start), "prompt_tokens": len(embeds),
                  "seconds_prefill": time.perf_counter() - t0, "seconds_decode": 0.0,
                  "prefill": mode.prefill, "decode": mode.decode,
                  "prefill_visited_blocks": visited_fraction(modes.layout_and_plan(spans, mode)[0], 512)}
        return tokens[:n], report

    def training_media(self, cfg: VideoXL2Config) -> TrainingMedia:
        return TrainingMedia(rule="fps_max", max_fps=4.0, time_message=False, frame_multiple=4)

    def training_extras(self, cfg: VideoXL2Config, tokenizer, seconds, n_frames: int, bucket: int) -> dict:
        return {"time_ids": time_ids(tokenizer, seconds, bucket)}

    def loss(self, params: dict, batch: dict, spec: Any) -> tuple[jax.Array, jax.Array]:
        """Σ CE over the answers after a dense (or, with model.compression 'chunk_sparse', the w_chunk
        sparse) prefill of the timestamped groups (loss.py)."""
        return video_ce(params, batch, spec)


FAMILY = register(VideoXL2Family())
