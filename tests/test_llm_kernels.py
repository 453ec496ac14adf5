"""The LLM prefill through the block-sparse kernels (interpret mode on CPU) equals the dense masked path."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvjax.config import LLMConfig
from lvjax.families.videochat_flash.compression import build_plan
from lvjax.families.videochat_flash.drops import drops_for_plan
from lvjax.generate import GenerationConfig, decode_from_cache, prefill_cache
from lvjax.models import llm
from lvjax.models.qwen2 import Qwen2

CFG = LLMConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2)
P, V, PAD, S = 5, 64, 7, 9  # prefix, visual, padding, question


def _prompts():
    """One prompt laid out as the answer path did before packing, [prefix][visual][padding][question],
    and packed, [prefix][visual][question][padding] (the same embeddings; the padding differs)."""
    params = nn.unbox(Qwen2(CFG).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"])
    real = jax.random.normal(jax.random.key(1), (1, P + V + S, 32))
    pad = jax.random.normal(jax.random.key(2), (1, PAD, 32))
    gap = jnp.concatenate([real[:, :P + V], pad, real[:, P + V:]], axis=1)
    gap_valid = jnp.ones(gap.shape[:2], bool).at[:, P + V: P + V + PAD].set(False)
    packed = jnp.concatenate([real, -pad], axis=1)  # other garbage in the padding: it must not matter
    packed_valid = jnp.ones(packed.shape[:2], bool).at[:, P + V + S:].set(False)
    return params, (gap, gap_valid), (packed, packed_valid)


HEAVY_IMPLS = ("pallas_interpret", "pallas_gpu", "pallas_tpu")
IMPLS = ["blockwise", *(pytest.param(i, marks=pytest.mark.heavy) for i in HEAVY_IMPLS)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("plan", ["xcomp_cosine", "attention"])
def test_packed_prefill_with_kernels_equals_dense(impl, plan):
    """The packed prompt through a layout equals the dense masked path over the unpacked one on the
    real rows, through LP-Comp's static drops and attention-scored drops (query: the last real token)."""
    params, (gap, gap_valid), (packed, packed_valid) = _prompts()
    kw = {"layers": (1, 2), "ratios": (1.0, 0.5, 0.25)} if plan == "attention" else {"schedule_layers": 3}
    drops = drops_for_plan(build_plan(plan, 3, **kw), CFG, V)
    prefill = jax.jit(llm.prefill, static_argnames=("cfg", "drops", "visual_start", "n_visual", "packed"))
    dense, dense_valid, *_ = prefill(params, CFG, gap, gap_valid, drops=drops, visual_start=P, n_visual=V)
    kernel, kernel_valid, *_ = prefill(params, CFG.replace(attention_impl=impl), packed, packed_valid,
                                       drops=drops, visual_start=P, n_visual=V, packed=True)
    real = lambda h, v: np.asarray(h)[0][np.asarray(v)[0]]  # noqa: E731
    np.testing.assert_allclose(real(kernel, kernel_valid), real(dense, dense_valid), atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS[:2])  # CI: blockwise (compile-bound on CPU)
def test_packed_generation_equals_dense(impl):
    """Greedy tokens and first-step logits of the packed prompt (padded cache slots masked) equal the
    dense unpacked prompt's; one compile serves every amount of padding."""
    params, (gap, gap_valid), (packed, packed_valid) = _prompts()
    gen = GenerationConfig(max_new_tokens=6)
    seen = jnp.zeros((1, CFG.vocab_size), bool)
    cfg = CFG.replace(attention_impl=impl)
    last, caches = prefill_cache(params, packed, packed_valid, cfg=cfg, max_new=6, packed=True)
    want_last, want_caches = prefill_cache(params, gap, gap_valid, cfg=CFG, max_new=6)
    np.testing.assert_allclose(llm.head(params, CFG, last), llm.head(params, CFG, want_last), atol=1e-5)
    got = decode_from_cache(params, last, caches, seen, jax.random.key(0), cfg=CFG, gen=gen)[0]
    want = decode_from_cache(params, want_last, want_caches, seen, jax.random.key(0), cfg=CFG, gen=gen)[0]
    np.testing.assert_array_equal(got, want)
    before = prefill_cache._cache_size()
    prefill_cache(params, packed, packed_valid.at[:, P + V + S - 3:].set(False), cfg=cfg, max_new=6, packed=True)
    assert prefill_cache._cache_size() == before


def test_layout_of_a_padded_prompt():
    lay = llm.causal_layout(10, (4, 6))
    mask = lay.dense_mask()
    valid = np.ones(10, bool)
    valid[4:6] = False
    want = np.tril(np.ones((10, 10), bool)) & valid[None] & valid[:, None]
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_array_equal(llm.causal_layout(5, ()).dense_mask(), np.tril(np.ones((5, 5), bool)))
