"""The LLM prefill through the block-sparse kernels (interpret mode on CPU) equals the dense masked path."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvjax.config import LLMConfig
from lvjax.families.videochat_flash.compression import build_plan
from lvjax.families.videochat_flash.drops import drops_for_plan
from lvjax.models import llm
from lvjax.models.qwen2 import Qwen2


@pytest.mark.parametrize("impl", [pytest.param(i, marks=pytest.mark.heavy) for i in ("pallas_gpu", "pallas_tpu")])
def test_prefill_with_kernels_equals_dense(impl):
    cfg = LLMConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2)
    params = nn.unbox(Qwen2(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"])
    P, V, pad, S = 5, 64, 7, 9  # [prefix][visual][padding][question], as the answer path lays out a prompt
    x = jax.random.normal(jax.random.key(1), (1, P + V + pad + S, 32))
    valid = jnp.ones(x.shape[:2], bool).at[:, P + V: P + V + pad].set(False)
    drops = drops_for_plan(build_plan("xcomp_cosine", 3, schedule_layers=3), cfg, V)
    dense, *_ = llm.prefill(params, cfg, x, valid, drops=drops, visual_start=P, n_visual=V)
    kernel, *_ = llm.prefill(params, cfg.replace(attention_impl=impl), x, valid, drops=drops, visual_start=P,
                             n_visual=V, pad_span=(P + V, P + V + pad))
    real = np.ones(dense.shape[1], bool)
    real[dense.shape[1] - S - pad: dense.shape[1] - S] = False  # padding rows are garbage either way
    np.testing.assert_allclose(np.asarray(kernel)[0, real], np.asarray(dense)[0, real], atol=1e-5)


def test_layout_of_a_padded_prompt():
    lay = llm.causal_layout(10, (4, 6))
    mask = lay.dense_mask()
    valid = np.ones(10, bool)
    valid[4:6] = False
    want = np.tril(np.ones((10, 10), bool)) & valid[None] & valid[:, None]
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_array_equal(llm.causal_layout(5, ()).dense_mask(), np.tril(np.ones((5, 5), bool)))
