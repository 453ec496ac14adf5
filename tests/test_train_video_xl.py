"""Video-XL training through the one pipeline: the loss on the shared batch against the CE of the
recorded original logits, the device window layout against the host `WindowPlan`, the
step-random draws, and a 3-step `lvjax train` run of configs/video_xl_tiny.yaml."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_training import assert_tiny_config_trains, reference_ce

from lvjax.convert.hf import read_hf_folder
from lvjax.convert.table import hf_to_lvjax
from lvjax.families.video_xl import FAMILY
from lvjax.families.video_xl.convert import set_resize_rows
from lvjax.families.video_xl.loss import draw_window_ratios, window_arrays
from lvjax.families.video_xl.memory import WindowPlan
from lvjax.train import objective
from lvjax.video.preprocess import resize_crop


@pytest.fixture(scope="module")
def model(recorded):
    ref = recorded("videoxl")
    hf, tensors = read_hf_folder(str(ref.model_dir), progress=False)
    cfg = FAMILY.config_from_hf(hf, str(ref.model_dir / "config.json"))
    params = hf_to_lvjax(tensors, FAMILY.rules(cfg), expected=FAMILY.abstract_params(cfg))
    params = set_resize_rows(params, ref["loader/embed_tokens_new_row"], ref["loader/lm_head_new_row"])
    return ref, cfg, params


def fixture_batch(ref, cfg):
    """The fixture's prompt (−200 at 14) with labels on all the text after the video, its 10 frames
    resized and cropped as CLIPImageProcessor (uint8), one row."""
    ids = ref["prompt/input_ids"].astype(np.int32)
    vs = int(np.flatnonzero(ids == objective.IMAGE_TOKEN_INDEX)[0])
    labels = np.where(np.arange(len(ids)) > vs, ids, -100).astype(np.int32)
    frames = resize_crop(ref["video/frames_uint8"], cfg.preprocess.resize, cfg.preprocess.crop)
    batch = {"input_ids": ids[None], "labels": labels[None], "valid": np.ones((1, len(ids)), bool),
             "frames": frames[None], "frame_valid": np.ones((1, len(frames)), bool),
             "rng": np.asarray(jax.random.key_data(jax.random.split(jax.random.key(0), 1)))}
    return batch, vs, labels


def test_loss_equals_ce_of_recorded_logits_and_grads_reach_the_memory(model):
    """Ratio 4 ('main'): Σ CE / tokens within 1e-4 of the CE of `main/logits_text`; the beacon k/v
    projections (which only reach the text through the memory) get gradients."""
    ref, cfg, params = model
    cfg4 = cfg.replace(beacon_ratio=(4,))
    batch, vs, labels = fixture_batch(ref, cfg4)
    spec = objective.ObjectiveSpec("video_xl", cfg4, visual_start=vs)
    (ce, met), grads = jax.value_and_grad(objective.loss_fn, has_aux=True)(params, batch, spec)
    want, n = reference_ce(ref["main/logits_text"], labels[vs + 1:])
    assert int(met["tokens"]) == n == 60
    assert abs(float(ce) / n - want / n) <= 1e-4, (float(ce) / n, want / n)
    beacon = grads["llm"]["layers"]["self_attn"]
    for name in ("beacon_k_proj", "beacon_v_proj"):
        assert float(jnp.abs(beacon[name]["kernel"]).max()) > 0, name
    assert float(jnp.abs(grads["vision"]["embeddings"]["patch_embedding"]["kernel"]).max()) > 0


@pytest.mark.heavy
def test_loss_with_padded_frames_equals_the_unpadded_loss(model):
    """Two padding frames (frame_valid False) change nothing: their windows get no tokens."""
    ref, cfg, params = model
    cfg8 = cfg.replace(beacon_ratio=(8,))
    batch, vs, _ = fixture_batch(ref, cfg8)
    padded = dict(batch, frames=np.concatenate([batch["frames"], np.zeros_like(batch["frames"][:, :6])], axis=1),
                  frame_valid=np.concatenate([batch["frame_valid"], np.zeros((1, 6), bool)], axis=1))
    spec = objective.ObjectiveSpec("video_xl", cfg8, visual_start=vs)
    a, _ = objective.loss_fn(params, batch, spec)
    b, _ = objective.loss_fn(params, padded, spec)
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
    want, _ = reference_ce(ref["second/logits_text"], batch["labels"][0, vs + 1:])
    np.testing.assert_allclose(float(a), want, rtol=1e-5)


@pytest.mark.parametrize("raw,ratios", [((64, 64, 32), (2, 8, 4)), ((64, 64, 32), (4, 4, 4)),
                                        ((64, 48, 0, 0), (8, 16, 2, 2)), ((64, 20), (3, 7))])
def test_device_windows_equal_the_host_plan(raw, ratios):
    plan = WindowPlan(tuple(r for r in raw if r), ratios[:sum(1 for r in raw if r)], 64 + 32, 32)
    src, rows, n = (np.asarray(a) for a in window_arrays(jnp.asarray(raw), jnp.asarray(ratios), 96, 32))
    hs, hr, hn = plan.arrays()
    k = len(plan.raw)
    np.testing.assert_array_equal(src[:k], hs)
    np.testing.assert_array_equal(rows[:k], hr)
    np.testing.assert_array_equal(n[:k], hn)
    assert (n[k:] == 0).all() and (src[k:] == -2).all()


def test_step_random_draws_only_valid_ratios_uniformly_and_per_key():
    raw = jnp.asarray([64, 64, 32, 8, 4, 0])
    keys = jax.random.split(jax.random.key(1), 2000)
    draws = np.asarray(jax.vmap(lambda k: draw_window_ratios(k, raw, (2, 4, 8)))(keys))
    for col, allowed in enumerate([{2, 4, 8}, {2, 4, 8}, {2, 4, 8}, {2, 4, 8}, {2, 4}, {2}]):
        assert set(draws[:, col].tolist()) == allowed, col
    freq = np.mean(draws[:, 0][:, None] == np.asarray([2, 4, 8])[None], axis=0)
    np.testing.assert_allclose(freq, 1 / 3, atol=0.05)
    again = np.asarray(draw_window_ratios(keys[7], raw, (2, 4, 8)))
    np.testing.assert_array_equal(again, draws[7])
    assert np.asarray(draw_window_ratios(keys[0], raw, (4,))).tolist() == [4] * 6


@pytest.mark.heavy
def test_tiny_config_trains_three_steps(tmp_path):
    """`lvjax train --config configs/video_xl_tiny.yaml` (the tiny original, ratios {2, 4, 8}): loss falls."""
    assert_tiny_config_trains("video_xl_tiny.yaml", tmp_path)
