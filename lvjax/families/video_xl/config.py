"""The Video-XL config: Qwen2 + CLIP sub-folder + `mlp2x_gelu` projector + the `beacon_*` fields.

Read from the folder's `config.json` and the CLIP folder `mm_vision_tower` names (relative to
the folder, as the tiny fixture writes it; when that path does not exist a `vision_tower/`
sub-folder is used, since the released config holds an absolute path of the authors' machine).

Vocabulary: the original loader grows the embedding and the LM head by one row
(`resize_token_embeddings(vocab_size + 1)`), so `llm.vocab_size` = `checkpoint_vocab` + 1.
The visual placeholder id is `llm.vocab_size - 1`, the VST id `llm.vocab_size` (embedded by
`beacon_embed_tokens[0]`).
"""

from __future__ import annotations

import dataclasses
import os

from lvjax.config import (
    ConfigError,
    LLMConfig,
    _freeze,
    _thaw_pairs,
    check_sizes,
    read_json,
)
from lvjax.families.video_xl.image import ImageRoute
from lvjax.models.clip import CLIPConfig

CLIP_FOLDER = "vision_tower"
# The fields this config reads and writes back itself; every other config.json field is kept verbatim.
_OWN = {"vocab_size", "mm_vision_tower", "mm_vision_select_layer", "mm_hidden_size", "mm_projector_type",
        "mm_spatial_pool_stride", "mm_spatial_pool_mode", "beacon_window", "beacon_stride", "beacon_attn",
        "beacon_ratio", "beacon_ratio_mix", "beacon_param", "beacon_pos", "beacon_sink_size", "beacon_accum",
        "enable_beacon"}


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """`CLIPImageProcessor` settings: shortest edge → `resize`, centre crop (h, w), mean/std."""

    resize: int = 336
    crop: tuple[int, int] = (336, 336)
    mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class VideoXLConfig:
    """llm (vocab_size = checkpoint rows + 1), clip, and the Video-XL fields.

    beacon_window: raw tokens per visual window (a multiple of the tokens per frame);
    beacon_ratio: the compression ratios, one drawn per window by `step-random` when several;
    beacon_param: which of q/k/v have VST weights. image: how a single image is routed
    (`image_aspect_ratio`, `mm_patch_merge_type`, `image_grid_pinpoints`, parsed; the raw fields
    stay in `extra`, so export writes them back verbatim). `extra`, `clip_hf`, `preprocessor_hf`
    keep the other fields of config.json and the CLIP folder's two JSON files for export.
    """

    llm: LLMConfig
    clip: CLIPConfig
    preprocess: Preprocess
    checkpoint_vocab: int
    mm_hidden_size: int
    beacon_window: int
    beacon_ratio: tuple[int, ...]
    beacon_param: tuple[str, ...] = ("q", "k", "v")
    beacon_ratio_mix: str = "step-random"
    pool_stride: int = 2
    mm_vision_tower: str = CLIP_FOLDER
    image: ImageRoute = ImageRoute()
    extra: tuple = ()
    clip_hf: tuple = ()
    preprocessor_hf: tuple = ()

    @property
    def placeholder_id(self) -> int:
        return self.llm.vocab_size - 1

    @property
    def tokens_per_frame(self) -> int:
        return (self.clip.grid // self.pool_stride) ** 2

    def replace(self, **kw) -> "VideoXLConfig":
        return dataclasses.replace(self, **kw)

    def with_dtypes(self, dtype: str, param_dtype: str) -> "VideoXLConfig":
        return self.replace(llm=self.llm.replace(dtype=dtype, param_dtype=param_dtype),
                            clip=self.clip.replace(dtype=dtype, param_dtype=param_dtype))

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "VideoXLConfig":
        """From `config.json` (at path `source`; its folder holds the CLIP sub-folder)."""
        def need(key, ok, what):
            if not ok(hf.get(key)):
                raise ConfigError(f"{source}: {key}={hf.get(key)!r} is not supported (expected {what})")
            return hf[key]

        need("mm_projector_type", lambda v: v == "mlp2x_gelu", "'mlp2x_gelu'")
        need("beacon_attn", lambda v: v == "full-coverage", "'full-coverage'")
        need("beacon_pos", lambda v: v == "interleave", "'interleave'")
        need("beacon_sink_size", lambda v: v in (None, 0), "0")
        need("beacon_accum", lambda v: v in (None, True), "true")
        need("mm_spatial_pool_mode", lambda v: v in (None, "average"), "'average'")
        window = need("beacon_window", lambda v: isinstance(v, int) and v > 0, "a positive integer")
        need("beacon_stride", lambda v: v in (None, window), f"equal to beacon_window={window}")
        ratios = hf.get("beacon_ratio")
        ratios = [ratios] if isinstance(ratios, int) else ratios
        if not ratios or not all(isinstance(r, int) and r > 0 for r in ratios):
            raise ConfigError(f"{source}: beacon_ratio={hf.get('beacon_ratio')!r} is not supported "
                              "(expected positive integers)")
        mix = hf.get("beacon_ratio_mix", "step-random")
        if len(ratios) > 1 and mix != "step-random":
            raise ConfigError(f"{source}: beacon_ratio_mix={mix!r} is not supported (expected 'step-random')")
        param = hf.get("beacon_param", ["q", "k", "v"])
        param = param.split() if isinstance(param, str) else list(param)
        if not set(param) <= {"q", "k", "v"}:
            raise ConfigError(f"{source}: beacon_param={param!r} is not supported (a subset of q, k, v)")

        clip_dir = clip_folder(hf, source)
        clip_json = os.path.join(clip_dir, "config.json")
        clip_hf = read_json(clip_json)
        check_sizes(clip_hf, clip_json)
        clip = CLIPConfig.from_hf(clip_hf, int(hf.get("mm_vision_select_layer", -2)), clip_json)
        pre_json = os.path.join(clip_dir, "preprocessor_config.json")
        pre_hf = read_json(pre_json) if os.path.isfile(pre_json) else {}
        crop = pre_hf.get("crop_size", clip.image_size)
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        size = pre_hf.get("size", clip.image_size)
        size = size.get("shortest_edge") if isinstance(size, dict) else size
        pre = Preprocess(int(size), crop, tuple(pre_hf.get("image_mean", Preprocess.mean)),
                         tuple(pre_hf.get("image_std", Preprocess.std)))
        if crop != (clip.image_size, clip.image_size):
            raise ConfigError(f"{pre_json}: crop_size {crop} differs from the CLIP image_size {clip.image_size}")

        vocab = hf.get("vocab_size")
        llm = LLMConfig.from_hf({**hf, "vocab_size": vocab + 1 if isinstance(vocab, int) else vocab}, source)
        mm_hidden = int(hf.get("mm_hidden_size", clip.hidden_size))
        if mm_hidden != clip.hidden_size:
            raise ConfigError(f"{source}: mm_hidden_size={mm_hidden} differs from the CLIP width {clip.hidden_size}")
        cfg = cls(llm=llm, clip=clip, preprocess=pre, checkpoint_vocab=vocab, mm_hidden_size=mm_hidden,
                  beacon_window=window, beacon_ratio=tuple(ratios), beacon_param=tuple(param), beacon_ratio_mix=mix,
                  pool_stride=int(hf.get("mm_spatial_pool_stride", 2)), mm_vision_tower=hf["mm_vision_tower"],
                  image=ImageRoute.from_hf(hf, clip.image_size, source),
                  extra=_freeze({k: v for k, v in hf.items() if k not in _OWN}), clip_hf=_freeze(clip_hf),
                  preprocessor_hf=_freeze(pre_hf))
        if clip.grid % cfg.pool_stride:
            raise ConfigError(f"{source}: mm_spatial_pool_stride={cfg.pool_stride} does not divide the "
                              f"{clip.grid}×{clip.grid} patch grid")
        if window % cfg.tokens_per_frame:
            raise ConfigError(f"{source}: beacon_window={window} is not a multiple of the {cfg.tokens_per_frame} "
                              "visual tokens per frame")
        return cfg

    def to_hf(self) -> dict:
        """config.json as the original writes it (checkpoint vocabulary, the kept fields verbatim)."""
        llm = self.llm.to_hf()
        llm["vocab_size"] = self.checkpoint_vocab
        return {
            **_thaw_pairs(self.extra), **llm,
            "mm_vision_tower": self.mm_vision_tower, "mm_vision_select_layer": self.clip.select_layer,
            "mm_hidden_size": self.mm_hidden_size, "mm_projector_type": "mlp2x_gelu",
            "mm_spatial_pool_stride": self.pool_stride, "mm_spatial_pool_mode": "average",
            "enable_beacon": True, "beacon_window": self.beacon_window, "beacon_stride": self.beacon_window,
            "beacon_attn": "full-coverage", "beacon_pos": "interleave", "beacon_sink_size": 0, "beacon_accum": True,
            "beacon_ratio": list(self.beacon_ratio), "beacon_ratio_mix": self.beacon_ratio_mix,
            "beacon_param": list(self.beacon_param),
        }


def clip_folder(hf: dict, source: str) -> str:
    """The CLIP folder: `mm_vision_tower` relative to the config's folder (or absolute), else `vision_tower/`."""
    base = os.path.dirname(os.path.abspath(source))
    tower = hf.get("mm_vision_tower")
    if not isinstance(tower, str) or not tower:
        raise ConfigError(f"{source}: mm_vision_tower={tower!r} (expected the CLIP folder, e.g. '{CLIP_FOLDER}')")
    for path in (os.path.join(base, tower), os.path.join(base, CLIP_FOLDER)):
        if os.path.isfile(os.path.join(path, "config.json")):
            return path
    raise ConfigError(f"{source}: mm_vision_tower={tower!r}: no CLIP folder with a config.json at "
                      f"{os.path.join(base, tower)} (nor {os.path.join(base, CLIP_FOLDER)}); put the CLIP "
                      f"config there (e.g. openai/clip-vit-large-patch14-336) as '{CLIP_FOLDER}/'")
