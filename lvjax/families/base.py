"""The family protocol: what every model family provides, so the rest of lvjax names none.

A family is one package under `lvjax/families/` exporting one `Family` object, registered in
`lvjax/families/registry.py`. `lvjax.load`, the converter, the CLI, `lvjax eval`, `lvjax train`
and the tools talk to models only through these methods. The pieces:

    config in/out      config_from_hf / config_to_hf / llm_config / with_dtypes / describe
    conversion         rules (the HF ↔ lvjax table), init, tied_lm_head_key, side_folders
    sampling           sampling(cfg) → Sampling defaults (None for text-only families)
    media → tokens     encode(params, cfg, frames: VideoFrames, intermediates=) → Encoded
    prompt + LLM       answer_encoded(model, encoded, question, ...) → (token ids, report)
    training           training_media(cfg) → TrainingMedia (how the data pipeline reads a video),
                       training_extras (host-side per-example arrays),
                       loss(params, batch, spec), visual_tokens_per_frame
    generation         generation(gen_dict, cfg) → GenerationConfig defaults

Configs are frozen dataclasses (static jit arguments); params are nested dicts whose paths
mirror the original module names. See docs/architecture.md for a worked example.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import flax.linen as nn
import jax
import numpy as np

from lvjax.config import ConfigError, LLMConfig
from lvjax.generate import GenerationConfig
from lvjax.video import VideoFrames

IMAGE_TOKEN_INDEX = -200  # the LLaVA-style <image> placeholder id of `tokenizer_image_token`

if TYPE_CHECKING:  # annotations only: the model handle imports the families, not the other way round
    from lvjax.model import Model


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Frame-sampling defaults of a family (what `answer` uses when the caller gives none).

    rule: a name from `lvjax.video.sampling.RULES` ('dynamic_fps1' for VideoChat-Flash,
    'linspace' for Video-XL and Video-XL-Pro, 'fps_max' for Video-XL-2). fps: sampled frames per second
    (None: the rule ignores it); max_fps: upper rate for 'fps_max'. frame_multiple: frames are
    padded to a multiple of it (clip length L, Video-XL-2's groups of 4). duplicate_to_min:
    XComp's evaluation repeats short samples up to `min_frames`.
    """

    rule: str
    fps: float | None = 1.0
    max_frames: int = 512
    min_frames: int = 1
    max_fps: float | None = None
    frame_multiple: int = 1
    duplicate_to_min: bool = False

    def replace(self, **kw) -> "Sampling":
        return dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class TrainingMedia:
    """How `lvjax train`'s data pipeline (host side) turns one record into the shared batch for a family.

    rule / max_fps: the frame-sampling rule (`lvjax.video.sampling.RULES`) with `data.fps`,
    `data.max_frames` … ('linspace' gives exactly `data.max_frames` frames; 'fps_cap' is Video-XL-Pro's
    training reader). time_message: the
    first user turn is "<image>\\n{time message} {question}" (qwen_2, VideoChat-Flash) or
    "<image>\\n{question}" (qwen_1_5, the Video-XL families). resize: 'square' (PIL bicubic to
    data.image_size²) or 'shortest_edge_crop' (shortest edge → data.image_size, centre crop, as
    CLIPImageProcessor). Plain data, so it travels to grain worker processes.
    """

    rule: str = "dynamic_fps1"
    max_fps: float | None = None
    time_message: bool = True
    resize: str = "square"
    frame_multiple: int = 1  # pad the sampled frames to a multiple by repeating the last (Video-XL-2's groups)


@dataclasses.dataclass
class Encoded:
    """A video after the vision side, kept so several questions can be asked of it.

    visual: what the family's LLM runner consumes (usually visual tokens (N, D) in LLM width).
    frames: the sampled `VideoFrames` it came from. seconds: per stage ('read', 'vision', …).
    stages: named intermediates (filled when encoded with `intermediates=True`: 'pixels',
    'vision', 'merge_assign', 'projector', …). cache: the family's reuse cache (e.g. a
    prefilled [system + video] KV cache keyed by prompt prefix and plan). n_valid: with frame
    buckets, the first n_valid visual tokens are real and the rest padding.
    """

    visual: Any
    frames: VideoFrames
    seconds: dict[str, float]
    stages: dict[str, Any] = dataclasses.field(default_factory=dict)
    cache: dict = dataclasses.field(default_factory=dict)
    n_valid: int | None = None  # real visual tokens when `visual` is padded to a frame bucket

    @property
    def num_frames(self) -> int:
        return len(self.frames)


class Family(abc.ABC):
    """One model family. Subclasses are stateless singletons; all state is in (cfg, params)."""

    name: ClassVar[str]
    # Keyword options `answer`/`answer_encoded` accept beyond the shared ones (e.g. 'compression').
    answer_options: ClassVar[frozenset[str]] = frozenset()
    # The LLM runs through `models.llm` (prefill / extend), which reads one array per layer best:
    # `lvjax.load` then places the LLM `layers` as a tuple of layer trees (`llm.unstack_layers`).
    per_layer_llm: ClassVar[bool] = False

    # ------------------------------------------------------------------ recognition and config

    @abc.abstractmethod
    def claims(self, hf: dict, keys: frozenset[str]) -> bool:
        """Whether a `config.json` dict (and, when known, the checkpoint's parameter keys) is this family's."""

    @abc.abstractmethod
    def config_from_hf(self, hf: dict, source: str) -> Any:
        """The family config from a `config.json` dict; `source` (the file path) names errors."""

    @abc.abstractmethod
    def config_to_hf(self, cfg: Any) -> dict:
        """A `config.json` dict the original code loads."""

    @abc.abstractmethod
    def llm_config(self, cfg: Any) -> LLMConfig:
        """The language model's config (vocabulary, layers, eos)."""

    @abc.abstractmethod
    def with_dtypes(self, cfg: Any, dtype: str, param_dtype: str, remat_policy: str | None = None) -> Any:
        """The config with compute / storage dtypes set on every tower (and the LLM's remat policy)."""

    def describe(self, cfg: Any) -> dict:
        """Sizes for `lvjax info`: {'llm': {...}, 'vision': {...} (video families)}."""
        llm = self.llm_config(cfg)
        return {"llm": {"hidden_size": llm.hidden_size, "layers": llm.num_hidden_layers,
                        "heads": llm.num_attention_heads, "kv_heads": llm.num_key_value_heads,
                        "vocab_size": llm.vocab_size}}

    # ------------------------------------------------------------------ parameters

    @abc.abstractmethod
    def rules(self, cfg: Any) -> list:
        """The conversion table (`lvjax.convert.table.Rule`s) of every parameter."""

    @abc.abstractmethod
    def init(self, cfg: Any, key: jax.Array) -> dict:
        """Random parameters, boxed with logical axis names (`nn.LogicallyPartitioned`)."""

    def tied_lm_head_key(self, cfg: Any) -> str | None:
        """The HF key a tied `lm_head.weight` copies (None when the head is untied)."""
        return "model.embed_tokens.weight" if self.llm_config(cfg).tie_word_embeddings else None

    def ignored_keys(self, cfg: Any, keys: frozenset[str]) -> set[str]:
        """Checkpoint keys the original stores but never uses (dropped on import, not re-exported)."""
        return {k for k in keys if k.endswith("rotary_emb.inv_freq")}

    def side_folders(self, hf: dict) -> tuple[str, ...]:
        """Sub-folders of the HF folder carried along on convert/export (e.g. a 'vision_tower/')."""
        return ()

    def write_side_folders(self, out: str, cfg: Any, tensors: dict[str, np.ndarray]) -> None:
        """Rewrite the side folders' weights from the exported `tensors` (default: nothing to do)."""

    def abstract_params(self, cfg: Any) -> dict:
        """Shape/dtype tree of the unboxed params (no allocation; traced once per config)."""
        return _abstract_params(self, cfg)

    # ------------------------------------------------------------------ media, prompt, LLM

    def sampling(self, cfg: Any) -> Sampling | None:
        """Frame-sampling defaults; None for text-only families."""
        return None

    def encode(self, params: dict, cfg: Any, frames: VideoFrames, *, intermediates: bool = False,
               **options) -> Encoded:
        """Sampled frames → `Encoded` (visual tokens and, if asked, named stage outputs).

        A single image arrives as one frame with `frames.method == "image"` (`Model.frames`);
        a family whose original routes images differently from frames branches on it here
        (Video-XL: unires anyres crops, `families/video_xl/image.py`)."""
        raise ConfigError(f"{self.name} models take no video (text only)")

    def answer_encoded(self, model: "Model", encoded: Encoded, question: str, *,
                       history: Sequence[tuple[str, str]], gen: GenerationConfig, seed: int | None,
                       **options) -> tuple[np.ndarray, dict]:
        """Prompt + LLM: generated token ids (N,) and a report (stage seconds, token counts, …)."""
        raise ConfigError(f"{self.name} models take no video (text only)")

    # ------------------------------------------------------------------ training and generation

    def visual_tokens_per_frame(self, cfg: Any) -> float:
        """Visual tokens the LLM sees per frame before any in-LLM compression (0 for text-only)."""
        return 0.0

    def training_media(self, cfg: Any) -> TrainingMedia:
        """How the training data pipeline samples, resizes and prompts a video for this family."""
        return TrainingMedia()

    def training_extras(self, cfg: Any, tokenizer: Any, seconds: np.ndarray, n_frames: int,
                        bucket: int) -> dict[str, np.ndarray]:
        """Host-side arrays of one example the family's `loss` needs beyond the shared batch (e.g. the
        tokenised timestamp prompt of Video-XL-2's groups), of fixed shapes for a frame `bucket`;
        `seconds` (n_frames,) are the sampled frames' times. Added to the batch under their names."""
        return {}

    @abc.abstractmethod
    def loss(self, params: dict, batch: dict, spec: Any) -> tuple[jax.Array, jax.Array]:
        """(Σ next-token CE over labelled tokens, number of labelled tokens) of one micro-batch.

        batch: the shared training batch (`lvjax.train.objective`): input_ids / labels / valid
        (B, S), frames (B, T, H, W, 3) uint8 + frame_valid (B, T) for video families, and `rng`
        (B, 2) uint32 per-row key data drawn from the train state's key (split every step, saved
        with checkpoints): the randomness a family's training forward draws (Video-XL's ratio
        mix, Video-XL-Pro's keep rate) comes from it, so a resumed run draws the same values.
        The family does its own frame preprocessing (normalisation) inside.
        """

    def generation(self, gen: dict, cfg: Any) -> GenerationConfig:
        """Decoding defaults from a `generation_config.json` dict."""
        return GenerationConfig.from_hf(gen, self.llm_config(cfg))

    def check_options(self, options: dict) -> None:
        """Refuse an answer option this family does not have (one clear error naming it)."""
        unknown = sorted(set(options) - self.answer_options)
        if unknown:
            allowed = ", ".join(sorted(self.answer_options)) or "none"
            raise ConfigError(f"{self.name}: unknown option(s) {', '.join(unknown)} (this family takes: {allowed})")


@functools.lru_cache(maxsize=16)
def _abstract_params(family: Family, cfg: Any) -> dict:
    return jax.eval_shape(lambda: nn.unbox(family.init(cfg, jax.random.key(0))))
