"""The LLM against the recorded original VideoChat-Flash (float32): logits and decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvjax.config import LLMConfig
from lvjax.convert.hf import read_hf_folder
from lvjax.convert.llm import llm_rules
from lvjax.convert.table import hf_to_lvjax
from lvjax.generate import (
    GenerationConfig,
    decode_from_cache,
    extend_cache,
    generate_from_embeds,
    prefill_cache,
)
from lvjax.models import llm

IM_END, ENDOFTEXT = 1019, 1017


@pytest.fixture(scope="module")
def lm(tiny_vcf_dir):
    hf, tensors = read_hf_folder(str(tiny_vcf_dir), progress=False)
    cfg = LLMConfig.from_hf(hf)
    text = {k: v for k, v in tensors.items() if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    return cfg, hf_to_lvjax(text, llm_rules(cfg), ignore={"lm_head.weight"})


def _run(cfg, params, x, gen, **kw):
    valid = jnp.ones(x.shape[:2], bool)
    seen = jnp.zeros((1, cfg.vocab_size), bool)
    return np.asarray(generate_from_embeds(params, x, valid, seen, jax.random.key(0), cfg=cfg, gen=gen, **kw)[0])[0]


def test_base_logits(lm, ref):
    cfg, params = lm
    x = jnp.asarray(ref["L4/inputs_embeds"])[None]
    h, *_ = llm.prefill(params, cfg, x, jnp.ones(x.shape[:2], bool))
    logits = np.asarray(llm.head(params, cfg, h))[0]
    want = ref["L4/base/logits"]
    assert np.abs(logits - want).max() <= 1e-4
    assert (logits.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("penalty,key", [(1.0, "greedy_ids"), (1.1, "evalstyle_ids")])
def test_base_greedy_tokens(lm, ref, penalty, key):
    cfg, params = lm
    gen = GenerationConfig(max_new_tokens=8, eos_token_ids=(IM_END, ENDOFTEXT), pad_token_id=ENDOFTEXT,
                           repetition_penalty=penalty)
    toks = _run(cfg, params, jnp.asarray(ref["L4/inputs_embeds"])[None], gen)
    np.testing.assert_array_equal(toks, ref[f"L4/base/{key}"])


@pytest.mark.heavy  # CI time: the answer path (cached video prefix + extend) meets the recorded original in test_videochat_flash
def test_prefix_cache_then_extend_equals_one_prefill(lm, ref):
    """Prefilling [system + video] once and extending with the question gives the same tokens."""
    cfg, params = lm
    x = jnp.asarray(ref["L4/inputs_embeds"])[None]
    gen = GenerationConfig(max_new_tokens=8, eos_token_ids=(IM_END,), pad_token_id=ENDOFTEXT, repetition_penalty=1.1)
    seen = jnp.zeros((1, cfg.vocab_size), bool)
    cut, pad = 270, 5  # the first 270 slots = 14 text + 256 visual; the rest extended with 5 padding slots
    _, caches = prefill_cache(params, x[:, :cut], jnp.ones((1, cut), bool), cfg=cfg, max_new=80 + 8)
    rest = jnp.pad(x[:, cut:], ((0, 0), (pad, 0), (0, 0)))
    valid = jnp.arange(rest.shape[1])[None] >= pad
    last, caches = extend_cache(params, caches, rest, valid, cfg=cfg)
    toks = decode_from_cache(params, last, caches, seen, jax.random.key(0), cfg=cfg, gen=gen)[0]
    np.testing.assert_array_equal(np.asarray(toks)[0], ref["L4/base/evalstyle_ids"])
