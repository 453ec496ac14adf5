"""Model configurations, read from and written back to Hugging Face `config.json` dicts.

Configs are frozen dataclasses so they can be static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any


class ConfigError(ValueError):
    """A user-facing configuration problem (names the file, key or value)."""


def _freeze(value: Any) -> Any:
    """Dicts/lists → hashable tuples (for static jit arguments)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw_pairs(value: Any) -> Any:
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value):
        return {k: _thaw_pairs(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw_pairs(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Qwen2 / Qwen2.5 decoder sizes and numerics.

    `dtype` is the compute dtype, `param_dtype` the storage dtype of parameters.
    `rope_scaling` is kept frozen (sorted key/value pairs); use `rope_scaling_dict`.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    rope_scaling: tuple | None = None
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    head_dim_override: int | None = None
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "none"
    attention_impl: str = "auto"

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_attention_heads

    @property
    def rope_scaling_dict(self) -> dict | None:
        return None if self.rope_scaling is None else _thaw_pairs(self.rope_scaling)

    def replace(self, **kw) -> "LLMConfig":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "LLMConfig":
        """Build from a Hugging Face Qwen2-style config dict; `source` names the file in errors."""
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in hf]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        if hf.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported (Qwen2 uses 'silu')")
        if hf.get("use_sliding_window"):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported")
        eos = hf.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (int(eos),)
        # transformers ≥ 5 writes `rope_parameters` (theta included); older files `rope_theta` + `rope_scaling`.
        rope_params = hf.get("rope_parameters") or {}
        theta = rope_params.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling = hf.get("rope_scaling")
        if scaling is None and rope_params.get("rope_type", "default") != "default":
            scaling = {k: v for k, v in rope_params.items() if k != "rope_theta"}
        if scaling is not None:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind not in ("yarn", "default", None):
                raise ConfigError(f"{source}: rope_scaling type {kind!r} is not supported (only 'yarn')")
            if kind in ("default", None):
                scaling = None
        n_heads = hf["num_attention_heads"]
        cfg = cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=n_heads,
            num_key_value_heads=hf.get("num_key_value_heads") or n_heads,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=_freeze(scaling),
            max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            head_dim_override=hf.get("head_dim") if hf.get("head_dim") not in (None, hf["hidden_size"] // n_heads) else None,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
        )
        if cfg.num_attention_heads % cfg.num_key_value_heads:
            raise ConfigError(
                f"{source}: num_attention_heads={cfg.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={cfg.num_key_value_heads}"
            )
        return cfg

    def to_hf(self) -> dict:
        """The Qwen2 fields of a Hugging Face config dict."""
        out = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling_dict,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_sliding_window": False,
        }
        if self.head_dim_override:
            out["head_dim"] = self.head_dim_override
        if self.bos_token_id is not None:
            out["bos_token_id"] = self.bos_token_id
        if self.eos_token_id:
            out["eos_token_id"] = self.eos_token_id[0] if len(self.eos_token_id) == 1 else list(self.eos_token_id)
        return out


def read_json(path: str) -> dict:
    """Read a JSON file with a clear error naming it."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


# The real UMT-L sizes; a `vision_tower_config` dict in config.json overrides them (tiny models).
_UMT_LARGE = dict(
    patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4.0,
    ckpt_num_frame=4, tubelet_size=1, return_idx=-2, layer_norm_eps=1e-6, final_layer_norm_eps=1e-12,
    qkv_bias=True,
)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """UMT ViT sizes. `num_frames` is the clip length L (`mm_local_num_frames`).

    Only `num_hidden_layers + return_idx + 1` blocks are built (23 of 24 for UMT-L).
    """

    image_size: int = 448
    patch_size: int = 16
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    mlp_ratio: float = 4.0
    ckpt_num_frame: int = 4
    tubelet_size: int = 1
    return_idx: int = -2
    layer_norm_eps: float = 1e-6
    final_layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    num_frames: int = 4
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def num_blocks(self) -> int:
        """Blocks actually instantiated (the output is taken after the last of them)."""
        return self.num_hidden_layers + self.return_idx + 1

    @property
    def grid(self) -> int:
        """Patches per side of a frame."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    def replace(self, **kw) -> "VisionConfig":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "VisionConfig":
        """From a VideoChat-Flash config dict (`mm_vision_tower`, optional `vision_tower_config`)."""
        tower = hf.get("mm_vision_tower")
        if not isinstance(tower, str) or not tower.startswith("umt"):
            raise ConfigError(
                f"{source}: mm_vision_tower={tower!r} is not supported (expected a UMT tower such as 'umt-hd-large')"
            )
        fields = dict(_UMT_LARGE, image_size=448 if tower.startswith("umt-hd") else 224)
        override = hf.get("vision_tower_config") or {}
        unknown = set(override) - set(fields) - {"image_size"}
        if unknown:
            raise ConfigError(f"{source}: vision_tower_config has unknown field(s) {sorted(unknown)}")
        fields.update(override)
        if "mm_vision_select_layer" in hf:
            fields["return_idx"] = int(hf["mm_vision_select_layer"])
        fields["num_frames"] = int(hf.get("mm_local_num_frames", 4))
        cfg = cls(**fields)
        if cfg.image_size % cfg.patch_size:
            raise ConfigError(f"{source}: image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        if not 0 < cfg.num_blocks <= cfg.num_hidden_layers:
            raise ConfigError(f"{source}: mm_vision_select_layer={cfg.return_idx} selects no ViT block")
        return cfg

    def to_hf_override(self) -> dict:
        """The `vision_tower_config` dict written back on export."""
        return {k: getattr(self, k) for k in ("image_size", *_UMT_LARGE)}
