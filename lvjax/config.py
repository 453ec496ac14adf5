"""Model configurations, read from and written back to Hugging Face `config.json` dicts.

Configs are frozen dataclasses so they can be static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from lvjax.errors import ConfigError  # noqa: F401  (re-exported: lvjax.config.ConfigError)


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
        check_sizes(hf, source)
        eos = hf.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        if not all(_is_int(t) and t >= 0 for t in eos) or not (hf.get("bos_token_id") is None or _is_int(hf["bos_token_id"])):
            raise ConfigError(f"{source}: eos_token_id={hf.get('eos_token_id')!r} / bos_token_id="
                              f"{hf.get('bos_token_id')!r} must be token ids (integers)")
        if not isinstance(hf.get("tie_word_embeddings", False), bool):
            raise ConfigError(f"{source}: tie_word_embeddings={hf['tie_word_embeddings']!r} must be true or false")
        for key in ("rope_scaling", "rope_parameters"):
            if hf.get(key) is not None and not isinstance(hf[key], dict):
                raise ConfigError(f"{source}: {key}={hf[key]!r} must be an object")
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
            elif not (_is_number(scaling.get("factor")) and scaling["factor"] >= 1):
                raise ConfigError(f"{source}: rope_scaling.factor={scaling.get('factor')!r} must be a number >= 1")
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
    """Read a JSON object from a file with a clear error naming it (missing, not UTF-8, not JSON, not an object)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


# Fields of Hugging Face model configs (top level or a nested vision config) that are sizes: positive ints.
POSITIVE_INTS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "head_dim", "image_size", "patch_size", "num_channels",
    "mm_hidden_size", "tubelet_size", "ckpt_num_frame", "mm_local_num_frames", "mm_spatial_pool_stride",
    "beacon_window", "beacon_stride", "projection_dim", "shortest_edge", "height", "width",
})
# Fields that are positive real numbers.
POSITIVE_NUMBERS = frozenset({"rms_norm_eps", "layer_norm_eps", "final_layer_norm_eps", "rope_theta", "mlp_ratio"})


def check_sizes(hf: dict, source: str, prefix: str = "") -> None:
    """Raise ConfigError naming `source` and the key when a size field of `hf` (or of a nested object) is not a
    positive int (`num_hidden_layers: 1e9` is refused), an eps/theta not a positive number, or the heads do not
    divide the width / the KV heads the heads."""
    for key, value in hf.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            check_sizes(value, source, name + ".")
        elif value is None:
            continue
        elif key in POSITIVE_INTS and not (_is_int(value) and value > 0):
            raise ConfigError(f"{source}: {name}={value!r} must be a positive integer")
        elif key in POSITIVE_NUMBERS and not (_is_number(value) and value > 0):
            raise ConfigError(f"{source}: {name}={value!r} must be a positive number")
    width, heads, kv = hf.get("hidden_size"), hf.get("num_attention_heads"), hf.get("num_key_value_heads")
    if width and heads and not hf.get("head_dim") and width % heads:
        raise ConfigError(f"{source}: {prefix}hidden_size={width} is not a multiple of {prefix}num_attention_heads={heads}")
    if heads and kv and heads % kv:
        raise ConfigError(f"{source}: {prefix}num_attention_heads={heads} is not a multiple of "
                          f"{prefix}num_key_value_heads={kv}")


# generation_config.json fields / generation options: (check, what it must be).
_GENERATION = {
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "max_new_tokens": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_length": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "pad_token_id": (lambda v: _is_int(v) and v >= 0, "a token id (integer >= 0)"),
    "bos_token_id": (lambda v: _is_int(v) and v >= 0, "a token id (integer >= 0)"),
    "eos_token_id": (lambda v: (_is_int(v) and v >= 0) or (isinstance(v, (list, tuple)) and all(
        _is_int(t) and t >= 0 for t in v)), "a token id or a list of token ids"),
    "seed": (lambda v: _is_int(v), "an integer"),
}


def check_generation(gen: dict, source: str, error: type[Exception] = ConfigError) -> None:
    """Raise `error` naming `source` and the key for a generation setting of the wrong type or range (None = unset)."""
    for key, (ok, what) in _GENERATION.items():
        if gen.get(key) is not None and not ok(gen[key]):
            raise error(f"{source}: {key}={gen[key]!r} must be {what}")
