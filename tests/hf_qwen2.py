"""Tiny random `transformers.Qwen2ForCausalLM` folders for parity tests."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def make_qwen2(path, *, hidden=48, heads=6, kv_heads=2, layers=2, vocab=160, inter=80, tied=False, yarn=False,
               seed=0, std=0.25, dtype=torch.float32, head_dim=None):
    """Save a random Qwen2 LM to `path` with save_pretrained; returns the torch model (eval mode)."""
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=tied,
        max_position_embeddings=512, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64} if yarn else None,
    )
    if head_dim is not None:
        cfg.head_dim = head_dim
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    model = model.to(dtype)
    model.save_pretrained(path)
    return model
