"""Model families: how a Hugging Face `config.json` maps to an lvjax config, params and rules.

A family bundles the config reader/writer, the conversion rules and the parameter
initialiser, so conversion, export and `lvjax.load` treat every model the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax

from lvjax.config import ConfigError, LLMConfig


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    config_from_hf: Callable[[dict, str], Any]
    config_to_hf: Callable[[Any], dict]
    rules: Callable[[Any], list]
    init: Callable[[Any, jax.Array], dict]  # boxed (logically partitioned) params
    tied_lm_head_key: Callable[[Any], str | None]

    def abstract_params(self, cfg) -> dict:
        """Shape/dtype tree of the unboxed params (no allocation)."""
        return jax.eval_shape(lambda: nn.unbox(self.init(cfg, jax.random.key(0))))


def _qwen2_family() -> Family:
    import jax.numpy as jnp

    from lvjax.convert.llm import llm_rules
    from lvjax.models.qwen2 import Qwen2

    def init(cfg: LLMConfig, key):
        return Qwen2(cfg).init(key, jnp.zeros((1, 1), jnp.int32))["params"]

    return Family(
        name="qwen2",
        config_from_hf=LLMConfig.from_hf,
        config_to_hf=lambda cfg: {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **cfg.to_hf()},
        rules=llm_rules,
        init=init,
        tied_lm_head_key=lambda cfg: "model.embed_tokens.weight" if cfg.tie_word_embeddings else None,
    )


def _videochat_flash_family() -> Family:
    from lvjax.models.videochat_flash import family

    return family()


def family_for(hf_config: dict, source: str = "config.json") -> Family:
    """The family of a Hugging Face config dict (by `model_type` and the `mm_*` fields)."""
    model_type = hf_config.get("model_type")
    if model_type == "videochat_flash_qwen" or (model_type == "qwen2" and "mm_vision_tower" in hf_config):
        return _videochat_flash_family()
    if model_type == "qwen2":
        return _qwen2_family()
    raise ConfigError(
        f"{source}: model_type={model_type!r} is not supported "
        "(supported: 'qwen2', 'videochat_flash_qwen', and 'qwen2' with mm_* fields for XComp)"
    )


def family_by_name(name: str) -> Family:
    return {"qwen2": _qwen2_family, "videochat_flash": _videochat_flash_family}[name]()
