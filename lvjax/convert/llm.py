"""Conversion rules for the Qwen2 decoder (HF `model.*` / `lm_head.weight` keys)."""

from __future__ import annotations

from lvjax.config import LLMConfig
from lvjax.convert.table import IDENTITY, LINEAR, Rule


def llm_rules(cfg: LLMConfig, root: str = "", prefix: str = "model.") -> list[Rule]:
    """Rules for a Qwen2 LM whose lvjax params sit under `root` ('' or e.g. 'llm/').

    Tied embeddings have no `lm_head/kernel`; a stored `lm_head.weight` copy is handled by the
    loader (see convert/hf.py), not by a rule.
    """
    n = cfg.num_hidden_layers
    layer = f"{prefix}layers.{{i}}."
    rules = [Rule(f"{prefix}embed_tokens.weight", f"{root}embed_tokens/embedding")]
    for proj in ("q_proj", "k_proj", "v_proj"):
        rules.append(Rule(f"{layer}self_attn.{proj}.weight", f"{root}layers/self_attn/{proj}/kernel", LINEAR, n))
        rules.append(Rule(f"{layer}self_attn.{proj}.bias", f"{root}layers/self_attn/{proj}/bias", IDENTITY, n))
    rules.append(Rule(f"{layer}self_attn.o_proj.weight", f"{root}layers/self_attn/o_proj/kernel", LINEAR, n))
    for proj in ("gate_proj", "up_proj", "down_proj"):
        rules.append(Rule(f"{layer}mlp.{proj}.weight", f"{root}layers/mlp/{proj}/kernel", LINEAR, n))
    for norm in ("input_layernorm", "post_attention_layernorm"):
        rules.append(Rule(f"{layer}{norm}.weight", f"{root}layers/{norm}/scale", IDENTITY, n))
    rules.append(Rule(f"{prefix}norm.weight", f"{root}norm/scale"))
    if not cfg.tie_word_embeddings:
        rules.append(Rule("lm_head.weight", f"{root}lm_head/kernel", LINEAR))
    return rules
