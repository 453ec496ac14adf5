"""The SigLIP → DTS → mlp2x_gelu → pool front end (Video-XL-Pro, Video-XL-2) against the recorded originals."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from lvjax.convert.hf import read_hf_folder
from lvjax.convert.table import hf_to_lvjax
from lvjax.models import dts_frontend as fe
from lvjax.video import sampling
from lvjax.video.preprocess import preprocess, resize_frames


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _frontend(model_dir):
    hf, tensors = read_hf_folder(str(model_dir), progress=False)
    cfg = fe.FrontendConfig.from_hf(hf, str(model_dir / "config.json"))
    rules = fe.frontend_rules(cfg)
    keys = {k for r in rules for k in r.hf_keys()}
    expected = jax.eval_shape(lambda: nn.unbox(fe.init_frontend(cfg, jax.random.key(0))))
    params = hf_to_lvjax({k: v for k, v in tensors.items() if k in keys}, rules, expected=expected)
    return cfg, params, tensors


@pytest.fixture(scope="module")
def pro(recorded):
    ref = recorded("videoxl_pro")
    cfg, params, _ = _frontend(ref.model_dir)
    pixels = fe.preprocess_frames(ref["video/frames_uint8"], cfg)
    pooled, stages = fe.encode_groups(params, cfg, pixels, ref["vision/pad_repeat_counts"], intermediates=True)
    return ref, pooled, stages


def test_bilinear_matches_torch_interpolate():
    x = np.random.default_rng(0).standard_normal((3, 27, 27, 8)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(24, 24), mode="bilinear",
                                           align_corners=False).permute(0, 2, 3, 1).numpy()
    got = fe.interpolate(jnp.asarray(x.reshape(3, 729, 8)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_group_frames_is_the_original_view():
    x = np.random.default_rng(1).standard_normal((6, 3, 3, 8)).astype(np.float32)  # (F, h, w, C)
    counts = [1, 2, 1, 1, 2, 1]
    t = torch.repeat_interleave(torch.from_numpy(x).permute(0, 3, 1, 2), torch.tensor(counts), dim=0)
    want = t.reshape(2, 8, 4, 3, 3).permute(0, 2, 3, 4, 1).numpy()  # view(G, C, 4, h, w) → channels-last
    np.testing.assert_array_equal(np.asarray(fe.group_frames(jnp.asarray(x), counts)), want)


def test_pad_counts():
    np.testing.assert_array_equal(fe.pad_counts_last(6), [1, 1, 1, 1, 1, 3])
    np.testing.assert_array_equal(fe.pad_counts_last(2), [1, 3])
    np.testing.assert_array_equal(fe.pad_counts_last(8), np.ones(8))
    np.testing.assert_array_equal(fe.pad_counts_random(3, seed=5), [1, 1, 2])  # F < 4: the last frame
    c = fe.pad_counts_random(6, seed=11)
    assert c.sum() == 8 and sorted(c.tolist()) == [1, 1, 1, 1, 2, 2]
    np.testing.assert_array_equal(c, fe.pad_counts_random(6, seed=11))
    np.testing.assert_array_equal(fe.pad_counts_random(8, seed=3), np.ones(8))
    with pytest.raises(ValueError, match="multiple of 4"):
        fe.check_pad_counts([1, 1, 1], 3)
    with pytest.raises(ValueError, match="6 integers"):
        fe.check_pad_counts([2, 2], 6)


def test_pro_preprocess(recorded):
    ref = recorded("videoxl_pro")
    frames = ref["video/frames_uint8"]
    np.testing.assert_array_equal(sampling.linspace_indices(48, 6), ref["video/frame_idx"])
    np.testing.assert_array_equal(resize_frames(frames[:1], 384)[0], ref["preprocess/resized_uint8_frame0"])
    x = preprocess(frames, 384, mean=(0.5,) * 3, std=(0.5,) * 3).astype(np.float64)  # before the float16 cast
    np.testing.assert_allclose(x.mean(axis=(1, 2)), ref["preprocess/pixel_values_mean"], atol=1e-6)
    np.testing.assert_allclose(np.abs(x).sum(axis=(1, 2)), ref["preprocess/pixel_values_abs_sum"], rtol=1e-6)


def test_pro_vision_stages(pro):
    ref, pooled, st = pro
    assert _rel(st["vit_features"], ref["vision/vit_features"]) < 1e-5
    assert _rel(np.asarray(st["interpolated"]).transpose(0, 3, 1, 2), ref["vision/interpolated"]) < 1e-5
    for i in range(3):
        got = np.asarray(st["dts_layers"][i][0]).transpose(3, 0, 1, 2)  # group 0, channel-first
        assert _rel(got, ref[f"dts/layer{i}_out_group0"]) < 1e-5, i
    assert _rel(np.asarray(st["dts"]).transpose(0, 4, 1, 2, 3), ref["dts/output"]) < 1e-5
    assert _rel(st["projector"], ref["vision/projector_out"]) < 1e-5
    assert _rel(pooled, ref["vision/pooled"]) < 1e-5


def test_xl2_frontend(recorded):
    ref = recorded("videoxl2")
    cfg, params, tensors = _frontend(ref.model_dir)
    idx = sampling.fps_max_indices(200, 4.0, fps=1, max_fps=4, max_frames=48)
    np.testing.assert_array_equal(idx, ref["common/frame_idx"])
    stamps = sampling.rounded_timestamps(idx / 4.0)
    np.testing.assert_array_equal(stamps, ref["common/timestamps"])
    tok = AutoTokenizer.from_pretrained(str(ref.model_dir))
    vision_pad = tok.convert_tokens_to_ids("<|vision_pad|>")
    time_ids = fe.time_prompt_ids(tok, stamps, fe.XL2_TIME_FORMAT, vision_pad)
    np.testing.assert_array_equal(time_ids, ref["common/time_embedding"])

    # Groups are independent (ViT per frame, DTS per group of 4): the first 2 groups stand for all 12.
    pixels = fe.preprocess_frames(ref["common/frames_uint8"][:8], cfg)
    pooled, _ = fe.encode_groups(params, cfg, pixels, fe.pad_counts_last(len(pixels)))
    assert _rel(pooled, ref["common/pooled"][:2]) < 1e-5

    # The splice, from the recorded pooled tokens.
    embed = jnp.asarray(tensors["model.embed_tokens.weight"])
    ids = ref["common/input_ids"]
    i = int(np.flatnonzero(ids == -200)[0])
    visual = fe.visual_sequence(embed[time_ids], time_ids, jnp.asarray(ref["common/pooled"]), vision_pad)
    x = fe.splice(embed[ids[:i]], visual, embed[ids[i + 1:]])
    assert x.shape == (1896, 64)
    assert _rel(x, ref["common/inputs_embeds"]) < 1e-5


def test_fps_max_rule():
    # 10 s at 30 fps, budget 48: 1 fps gives 10 frames, 48 // 10 = 4 → 4 fps (step 8) → 38 → 36 (groups of 4).
    idx = sampling.fps_max_indices(300, 30.0, fps=1, max_fps=4, max_frames=48)
    np.testing.assert_array_equal(idx, np.arange(0, 300, 8)[:36])
    # budget exceeded at 1 fps: uniform linspace.
    np.testing.assert_array_equal(sampling.fps_max_indices(3000, 30.0, max_frames=48),
                                  np.linspace(0, 2999, 48, dtype=int))
    with pytest.raises(ValueError, match="fewer than 4"):
        sampling.fps_max_indices(60, 30.0, fps=1, max_fps=None)


def test_missing_vision_folder(tmp_path, recorded):
    src = recorded("videoxl2").model_dir
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    hf, _ = read_hf_folder(str(src), progress=False)
    with pytest.raises(fe.ConfigError, match="vision_tower/config.json: file not found"):
        fe.FrontendConfig.from_hf(hf, str(tmp_path / "config.json"))
