"""Video-XL-2 training through the one pipeline: the loss on the shared batch (dense and chunk-sparse
prefill) against the CE of the recorded original's suffix logits, and a 3-step tiny `lvjax train`."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file
from tiny_training import assert_tiny_config_trains, reference_ce
from transformers import AutoTokenizer

from lvjax.convert.table import hf_to_lvjax
from lvjax.families.video_xl2 import FAMILY
from lvjax.families.video_xl2.loss import time_ids
from lvjax.train import objective
from lvjax.video.preprocess import resize_frames


@pytest.fixture(scope="module")
def model(recorded):
    ref = recorded("videoxl2")
    folder = ref.model_dir
    cfg = FAMILY.config_from_hf(json.loads((folder / "config.json").read_text()), str(folder / "config.json"))
    params = hf_to_lvjax(load_file(str(folder / "model.safetensors")), FAMILY.rules(cfg))
    return ref, cfg, params, AutoTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("prefill,tag", [("none", "pure"), ("chunk_sparse:3:2", "w_chunk")])
def test_loss_equals_ce_of_recorded_suffix_logits(model, prefill, tag):
    """The fixture's 48 frames / prompt, labels on the text after the video but its first token
    (predicted from the last visual token, which the recorded suffix logits do not cover)."""
    ref, cfg, params, tok = model
    ids = ref["common/input_ids"].astype(np.int32)
    vs = int(np.flatnonzero(ids == objective.IMAGE_TOKEN_INDEX)[0])
    labels = np.where(np.arange(len(ids)) > vs + 1, ids, -100).astype(np.int32)
    frames = resize_frames(ref["common/frames_uint8"], cfg.frontend.vision.image_size)
    n = len(frames)
    batch = {"input_ids": ids[None], "labels": labels[None], "valid": np.ones((1, len(ids)), bool),
             "frames": frames[None], "frame_valid": np.ones((1, n), bool),
             "time_ids": time_ids(tok, ref["common/timestamps"], n)[None],
             "rng": np.zeros((1, 2), np.uint32)}
    spec = objective.ObjectiveSpec("video_xl2", cfg, compression=prefill, visual_start=vs)
    ce, met = jax.jit(lambda p, b: objective.loss_fn(p, b, spec))(params, batch)
    want, count = reference_ce(ref[f"{tag}/logits_suffix"], labels[vs + 1:])
    assert int(met["tokens"]) == count == 60
    assert abs(float(ce) / count - want / count) <= 1e-4, (float(ce) / count, want / count)


@pytest.mark.heavy
def test_tiny_config_trains_three_steps(tmp_path):
    assert_tiny_config_trains("video_xl2_tiny.yaml", tmp_path)
