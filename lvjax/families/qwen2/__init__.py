"""Plain Qwen2 / Qwen2.5 language models (text only): the LLM every video family builds on."""

from __future__ import annotations

import jax.numpy as jnp

from lvjax.config import LLMConfig
from lvjax.convert.llm import llm_rules
from lvjax.families.base import Family
from lvjax.families.registry import register
from lvjax.losses import token_ce
from lvjax.models import llm
from lvjax.models.qwen2 import Qwen2

__all__ = ["FAMILY"]


class Qwen2Family(Family):
    name = "qwen2"
    per_layer_llm = True

    def claims(self, hf: dict, keys: frozenset[str]) -> bool:
        # A Qwen2 config without any multimodal field (those belong to the video families).
        return hf.get("model_type") == "qwen2" and not any(k.startswith(("mm_", "beacon_")) for k in hf)

    def config_from_hf(self, hf: dict, source: str) -> LLMConfig:
        return LLMConfig.from_hf(hf, source)

    def config_to_hf(self, cfg: LLMConfig) -> dict:
        return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **cfg.to_hf()}

    def llm_config(self, cfg: LLMConfig) -> LLMConfig:
        return cfg

    def with_dtypes(self, cfg: LLMConfig, dtype: str, param_dtype: str, remat_policy: str | None = None) -> LLMConfig:
        return cfg.replace(dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy or cfg.remat_policy)

    def rules(self, cfg: LLMConfig) -> list:
        return llm_rules(cfg)

    def init(self, cfg: LLMConfig, key):
        return Qwen2(cfg).init(key, jnp.zeros((1, 1), jnp.int32))["params"]

    def loss(self, params, batch, spec):
        ids = jnp.where(batch["input_ids"] < 0, 0, batch["input_ids"])  # text-only: <image> slot → token 0
        cfg = spec.model_cfg
        hidden = llm.prefill_packed(params, cfg, llm.embed(params, cfg, ids), batch["valid"])
        return token_ce(llm.head(params, cfg, hidden), batch["labels"])


FAMILY = register(Qwen2Family())
