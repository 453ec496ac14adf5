"""Training attention goes through `attend`'s choice: a causal layout (kernels on GPU/TPU, blockwise
XLA for long sequences on CPU) gives the dense path's loss and gradients on padded batches."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvjax import attention
from lvjax.config import LLMConfig
from lvjax.families import family_by_name
from lvjax.families.base import IMAGE_TOKEN_INDEX
from lvjax.families.videochat_flash.compression import build_plan
from lvjax.families.videochat_flash.drops import drops_for_plan
from lvjax.losses import IGNORE_INDEX
from lvjax.models import llm
from lvjax.train.objective import ObjectiveSpec, loss_fn

LLM = LLMConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=True)
VIDEO_HF = {
    "model_type": "videochat_flash_qwen", "architectures": ["VideoChatFlashQwenForCausalLM"], "vocab_size": 64,
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "tie_word_embeddings": True, "mm_vision_tower": "umt-hd-tiny", "mm_hidden_size": 32,
    "mm_projector_type": "tome16_mlp_hd64", "mm_vision_select_layer": -2, "mm_local_num_frames": 4,
    "vision_tower_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                            "num_attention_heads": 2, "mlp_ratio": 2.0, "ckpt_num_frame": 4},
}


@pytest.fixture
def choices(monkeypatch):
    """The implementations `attend` chose while the test ran (recorded at trace time)."""
    seen = []
    real = attention.choose_impl

    def spy(*args, **kw):
        seen.append(real(*args, **kw))
        return seen[-1]

    monkeypatch.setattr(attention, "choose_impl", spy)
    return seen


def _rows(rng, lengths, s, left_padded=()):
    """ids, valid (B, s) of rows with `lengths` real tokens, right-padded except rows `left_padded`."""
    ids = rng.integers(1, LLM.vocab_size, (len(lengths), s)).astype(np.int32)
    valid = np.stack([np.arange(s) >= s - n if i in left_padded else np.arange(s) < n for i, n in enumerate(lengths)])
    return ids, valid


def _loss_and_grads(params, batch, spec):
    (ce, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, spec)
    return float(ce / aux["tokens"]), grads


def _assert_close(got, want):
    (loss_a, grads_a), (loss_b, grads_b) = got, want
    assert abs(loss_a - loss_b) <= 1e-5 * abs(loss_b), (loss_a, loss_b)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_a), jax.tree.leaves(grads_b)):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max() + 1e-12, jax.tree_util.keystr(path)


@pytest.mark.heavy  # CI time: the drops test below runs the same packed layout path, with video and drops
def test_text_loss_on_the_layout_path_equals_dense(choices):
    params = nn.unbox(family_by_name("qwen2").init(LLM, jax.random.key(0)))
    ids, valid = _rows(np.random.default_rng(0), (40, 23, 31), 40, left_padded=(1,))
    labels = np.where(valid, ids, IGNORE_INDEX)
    labels[:, :4] = IGNORE_INDEX
    labels[:, 1:][~valid[:, :-1]] = IGNORE_INDEX  # no label is predicted from a padding slot
    batch = {"input_ids": jnp.asarray(ids), "labels": jnp.asarray(labels), "valid": jnp.asarray(valid)}
    dense = _loss_and_grads(params, batch, ObjectiveSpec("qwen2", LLM.replace(attention_impl="dense")))
    assert set(choices) == {"dense"}
    choices.clear()
    blockwise = _loss_and_grads(params, batch, ObjectiveSpec("qwen2", LLM.replace(attention_impl="blockwise")))
    assert set(choices) == {"blockwise"}
    _assert_close(blockwise, dense)


@pytest.mark.parametrize("plan", ["xcomp_cosine", pytest.param("uniform0_attention", marks=pytest.mark.heavy)])  # CI time
def test_drops_with_padded_frames_on_the_layout_path_equal_dense(choices, plan):
    """LP-Comp / VideoChat-Flash drops in the training forward with padded frames inside the visual
    block: every stage packed (`prefill_packed`, blockwise) equals the dense masked prefill on the real
    slots, forward and gradients."""
    cfg = LLM.replace(num_hidden_layers=4)
    params = nn.unbox(family_by_name("qwen2").init(cfg, jax.random.key(2)))
    rng = np.random.default_rng(2)
    vs, tpf, frames, after = 3, 4, 6, 7
    n_vis, s = tpf * frames, vs + tpf * frames + after
    x = jnp.asarray(rng.normal(size=(3, s, cfg.hidden_size)), jnp.float32)
    real_frames = np.array([6, 3, 5])  # rows 1 and 2: bucket padding frames inside the visual block
    frame_ok = np.repeat(np.arange(frames)[None] < real_frames[:, None], tpf, axis=1)
    text_ok = np.arange(after)[None] < np.array([[7], [5], [6]])  # and text padding at the end
    valid = jnp.asarray(np.concatenate([np.ones((3, vs), bool), frame_ok, text_ok], axis=1))
    query = jnp.zeros((3, s), bool).at[:, s - 3].set(True)
    drops = drops_for_plan(build_plan(plan, 4, tpf, layers=(2,) if "attention" in plan else None), cfg, n_vis)
    assert drops

    def run(impl, p, x):
        kw = {"drops": drops, "visual_start": vs, "n_visual": n_vis, "query": query}
        c = cfg.replace(attention_impl=impl)
        if impl == "dense":
            h, v, _, _ = llm.prefill(p, c, x, valid, **kw)
        else:
            h = llm.prefill_packed(p, c, x, valid, **kw)
            v = llm.prefill(p, c, x, valid, **kw)[1]
        return jnp.where(v[..., None], h, 0.0)

    def loss(impl):
        return jax.jit(jax.value_and_grad(lambda p, x: (run(impl, p, x) ** 2).sum(), argnums=(0, 1)))(params, x)

    want = loss("dense")
    choices.clear()
    got = loss("blockwise")
    assert "blockwise" in choices
    assert abs(float(got[0]) - float(want[0])) <= 1e-5 * abs(float(want[0]))
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * np.abs(np.asarray(b)).max() + 1e-12


@pytest.mark.heavy  # CI time: the drops test above covers the packed layout path with video
def test_video_loss_on_the_layout_path_equals_dense(choices):
    family = family_by_name("videochat_flash")
    cfg = family.config_from_hf(VIDEO_HF, "test")
    params = nn.unbox(family.init(cfg, jax.random.key(1)))
    rng = np.random.default_rng(1)
    vs, s = 5, 30
    ids, valid = _rows(rng, (30, 25, 19), s)
    ids[:, vs] = IMAGE_TOKEN_INDEX
    labels = np.where(valid, ids, IGNORE_INDEX)
    labels[:, : vs + 8] = IGNORE_INDEX
    frames = rng.integers(0, 256, (3, 8, 32, 32, 3)).astype(np.uint8)
    frame_valid = np.arange(8)[None] < np.array([[8], [4], [8]])  # row 1: one clip of bucket padding
    batch = {"input_ids": jnp.asarray(ids), "labels": jnp.asarray(labels), "valid": jnp.asarray(valid),
             "frames": jnp.asarray(frames), "frame_valid": jnp.asarray(frame_valid)}
    spec = ObjectiveSpec("videochat_flash", cfg, "none", visual_start=vs)

    def with_impl(impl):
        return dataclasses.replace(spec, model_cfg=cfg.replace(llm=cfg.llm.replace(attention_impl=impl)))

    dense = _loss_and_grads(params, batch, with_impl("dense"))
    choices.clear()
    blockwise = _loss_and_grads(params, batch, with_impl("blockwise"))
    assert "blockwise" in choices  # the LLM's self-attention (the ViT chooses for itself)
    _assert_close(blockwise, dense)


def test_a_long_training_sequence_takes_a_non_dense_path(choices):
    """With "auto" a 2k-token batch runs blockwise on CPU; on TPU/GPU its layout picks the kernels."""
    params = jax.eval_shape(lambda: nn.unbox(family_by_name("qwen2").init(LLM, jax.random.key(0))))
    choices.clear()  # init's one-token forward
    s = 2048
    batch = {"input_ids": jax.ShapeDtypeStruct((2, s), jnp.int32), "labels": jax.ShapeDtypeStruct((2, s), jnp.int32),
             "valid": jax.ShapeDtypeStruct((2, s), bool)}
    jax.eval_shape(lambda p, b: loss_fn(p, b, ObjectiveSpec("qwen2", LLM)), params, batch)
    assert choices and set(choices) == {"blockwise"}
    layout = llm.causal_layout(s, ())
    for backend, kernel in (("tpu", "pallas_tpu"), ("gpu", "pallas_gpu")):  # head_dim 64, as the real models
        assert attention.choose_impl("auto", s, s, 64, layout=layout, backend=backend) == kernel
