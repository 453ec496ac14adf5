"""Video-XL-Pro training through the one pipeline: the loss on the shared batch (padded frames and text, the
recorded padding and keep rate) against the CE of the recorded original's suffix logits with gradients into
the selector, the in-graph frame-duplication and keep-rate draws, and a 3-step tiny `lvjax train`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_training import assert_tiny_config_trains, reference_ce
from transformers import AutoTokenizer

from lvjax.convert.hf import hf_to_params, read_hf_folder
from lvjax.families.video_xl_pro import FAMILY
from lvjax.families.video_xl_pro.loss import (
    draw_pad_counts,
    keep_count,
    padded_frame_index,
)
from lvjax.families.video_xl_pro.selector import num_kept
from lvjax.train import objective
from lvjax.video.preprocess import resize_frames


@pytest.fixture(scope="module")
def model(recorded):
    ref = recorded("videoxl_pro")
    folder = str(ref.model_dir)
    hf, tensors = read_hf_folder(folder, progress=False)
    cfg = FAMILY.config_from_hf(hf, f"{folder}/config.json")
    params, _ = hf_to_params(FAMILY, cfg, tensors, folder, progress=False)
    return ref, cfg, params, AutoTokenizer.from_pretrained(folder)


def test_loss_equals_ce_of_recorded_suffix_logits_and_grads_reach_the_selector(model):
    """The fixture's 6 frames in a 12-frame bucket (one padded group), its prompt + 4 padding tokens, labels
    on the text after the video but its first token; the recorded duplication and keep rate u = 0.8685."""
    ref, cfg, params, tok = model
    ids = ref["prompt/input_ids"].astype(np.int32)
    vs = int(np.flatnonzero(ids == objective.IMAGE_TOKEN_INDEX)[0])
    s, tb = len(ids) + 4, 12
    frames = np.zeros((tb, 384, 384, 3), np.uint8)
    frames[:6] = resize_frames(ref["video/frames_uint8"], cfg.frontend.vision.image_size)
    counts = np.zeros(tb, np.int32)
    counts[:6] = ref["vision/pad_repeat_counts"]
    labels = np.full(s, -100, np.int32)
    labels[vs + 2:len(ids)] = ids[vs + 2:]
    seconds = ref["video/timestamps"]
    extras = FAMILY.training_extras(cfg, tok, seconds, 6, tb)
    assert extras["time_ids"].shape == (3, 10) and (extras["time_ids"][2] == -1).all()
    np.testing.assert_array_equal(extras["time_ids"][:2].reshape(-1),
                                  ref["prompt/time_embedding"].reshape(2, 154)[:, :10].reshape(-1))
    batch = {"input_ids": np.pad(ids, (0, 4))[None], "labels": labels[None], "valid": (np.arange(s) < len(ids))[None],
             "frames": frames[None], "frame_valid": (np.arange(tb) < 6)[None], "time_ids": extras["time_ids"][None],
             "rng": np.zeros((1, 2), np.uint32), "pad_repeat_counts": counts[None],
             "keep_rate": np.asarray([ref["selector/drop_rate"]], np.float32)}
    spec = objective.ObjectiveSpec("video_xl_pro", cfg, visual_start=vs)
    (ce, met), grads = jax.jit(jax.value_and_grad(lambda p, b: objective.loss_fn(p, b, spec), has_aux=True))(params, batch)
    want, count = reference_ce(ref["llm/logits_suffix"], labels[vs + 1:len(ids)])
    assert int(met["tokens"]) == count == 60
    assert abs(float(ce) / count - want / count) <= 1e-4, (float(ce) / count, want / count)
    for path in (("text_mlp", "kernel"), ("WindowTimeToTokenAttention", "k_proj", "kernel")):
        g = grads
        for key in path:
            g = g[key]
        assert float(jnp.abs(g).max()) > 0, path


@pytest.mark.parametrize("n", [1, 3, 4, 6, 7, 9, 12])
def test_pad_count_draws_follow_add_video(n):
    """Σ counts = n rounded up to 4; n < 4 repeats the last frame; else 4 − n % 4 distinct frames get one
    extra copy, every frame chosen over keys; one key, one draw; `padded_frame_index` = repeat_interleave."""
    bucket = 12
    keys = jax.random.split(jax.random.key(3), 200)
    counts = np.asarray(jax.vmap(lambda k: draw_pad_counts(k, jnp.int32(n), bucket))(keys))
    assert (counts.sum(1) == n + (-n % 4)).all() and (counts[:, n:] == 0).all() and (counts[:, :n] >= 1).all()
    if n < 4:
        assert (counts[:, :n - 1] == 1).all() and (counts[:, n - 1] == 5 - n).all()
    else:
        assert counts.max() <= 2 and ((counts[:, :n] == 2).sum(1) == -n % 4).all()
        if n % 4:
            assert (counts[:, :n] == 2).any(0).all()
    np.testing.assert_array_equal(np.asarray(draw_pad_counts(keys[5], jnp.int32(n), bucket)), counts[5])
    index = np.asarray(padded_frame_index(jnp.asarray(counts[0])))
    want = np.repeat(np.arange(bucket), counts[0])
    np.testing.assert_array_equal(index[:len(want)], want)


def test_keep_count_matches_num_kept():
    rates = np.random.default_rng(0).uniform(0.7, 0.99, 300).astype(np.float32)
    for n in (144, 288, 1152, 18432):
        got = np.asarray(jax.vmap(lambda u: keep_count(jnp.int32(n), u))(rates))
        np.testing.assert_array_equal(got, [num_kept(n, float(u)) for u in rates])


@pytest.mark.heavy
def test_tiny_config_trains_three_steps(tmp_path):
    """configs/video_xl_pro_tiny.yaml: 2–4 s videos at 2 fps (4, 6 or 8 frames; 6 duplicates two), loss falls."""
    assert_tiny_config_trains("video_xl_pro_tiny.yaml", tmp_path)
