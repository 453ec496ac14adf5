"""UMT ViT + projector: conversion round trip, parity with a torch reference, fixture parity."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from lvjax.convert.table import flatten_paths, hf_to_lvjax, lvjax_to_hf
from lvjax.families.videochat_flash.convert import projector_rules, vision_rules
from lvjax.models.projector import Projector, projector_apply
from lvjax.models.umt import UMTConfig, UMTVisionTower, init_vision, vision_apply
from tests import torch_umt

MEAN = np.array((0.485, 0.456, 0.406), np.float32)
STD = np.array((0.229, 0.224, 0.225), np.float32)


def _fixture_cfg(tiny_vcf_dir, frames: int = 4) -> tuple[UMTConfig, dict]:
    hf = json.loads((tiny_vcf_dir / "config.json").read_text())
    return UMTConfig.from_hf(dict(hf, mm_local_num_frames=frames)), hf


def _select(tensors: dict, *prefixes: str) -> dict:
    return {k: v for k, v in tensors.items() if k.startswith(prefixes)}


def _rules(cfg: UMTConfig):
    return [*vision_rules(cfg, root="vision/"), *projector_rules(root="projector/")]


def _expected_shapes(cfg: UMTConfig, d: int) -> dict:
    clip = jax.ShapeDtypeStruct((1, cfg.num_frames, cfg.image_size, cfg.image_size, 3), jnp.float32)
    vis = jax.eval_shape(lambda c: UMTVisionTower(cfg).init(jax.random.PRNGKey(0), c), clip)["params"]
    proj = jax.eval_shape(
        lambda: Projector(d).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, cfg.hidden_size)))
    )["params"]
    return nn.unbox({"vision": vis, "projector": proj})


def _load(path, cfg: UMTConfig):
    tensors = _select(load_file(str(path)), torch_umt.VISION_PREFIX, torch_umt.PROJECTOR_PREFIX)
    params = hf_to_lvjax(tensors, _rules(cfg))
    return jax.tree_util.tree_map(jnp.asarray, params), tensors


# ----------------------------------------------------------------------------- conversion


def test_conversion_round_trip_fixture(tiny_vcf_dir):
    cfg, hf = _fixture_cfg(tiny_vcf_dir)
    tensors = _select(load_file(str(tiny_vcf_dir / "model.safetensors")), torch_umt.VISION_PREFIX, torch_umt.PROJECTOR_PREFIX)
    assert len(tensors) == 2 + 13 * cfg.num_blocks + 2 + 4  # patch embed, blocks, final LN, projector
    expected = _expected_shapes(cfg, hf["hidden_size"])
    params = hf_to_lvjax(tensors, _rules(cfg), expected=expected)
    got = {k: v.shape for k, v in flatten_paths(params).items()}
    want = {k: tuple(v.shape) for k, v in flatten_paths(expected).items()}
    assert got == want
    back = lvjax_to_hf(params, _rules(cfg))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_rules_cover_umt_large():
    """UMT-L (448, 23 of 24 blocks, mm_vision_select_layer −2): rule paths = module params, real shapes."""
    cfg = UMTConfig.from_hf({"mm_vision_tower": "umt-hd-large", "mm_vision_select_layer": -2, "mm_local_num_frames": 4})
    shapes = {k: tuple(v.shape) for k, v in flatten_paths(_expected_shapes(cfg, 1536)).items()}
    rules = _rules(cfg)
    assert {r.path for r in rules} == set(shapes)
    hf_keys = {k for r in rules for k in r.hf_keys()}
    assert len(hf_keys) == 2 + 13 * 23 + 2 + 4
    assert "model.vision_tower.vision_tower.encoder.blocks.22.attn.qkv.weight" in hf_keys
    assert "model.vision_tower.vision_tower.encoder.blocks.23.attn.qkv.weight" not in hf_keys
    assert shapes["vision/blocks/attn/qkv/kernel"] == (23, 1024, 3072)
    assert shapes["vision/patch_embed/proj/kernel"] == (1, 16, 16, 3, 1024)
    assert shapes["vision/blocks/mlp/fc1/kernel"] == (23, 1024, 4096)
    assert shapes["projector/mlp_0/kernel"] == (1024, 1536)


def test_param_tree_layout_and_logical_axes():
    cfg = UMTConfig(image_size=32, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, num_frames=2)
    boxed = init_vision(cfg, jax.random.PRNGKey(0))
    specs = flatten_paths(nn.get_partition_spec(boxed))
    assert specs["blocks/attn/qkv/kernel"] == jax.sharding.PartitionSpec("layers", "vision_embed", "vision_heads")
    assert specs["blocks/mlp/fc1/kernel"] == jax.sharding.PartitionSpec("layers", "vision_embed", "vision_mlp")
    assert specs["patch_embed/proj/kernel"] == jax.sharding.PartitionSpec(None, None, None, None, "vision_embed")
    shapes = {k: v.shape for k, v in flatten_paths(nn.unbox(boxed)).items()}
    assert shapes["blocks/attn/qkv/kernel"] == (3, 16, 48)
    assert shapes["patch_embed/proj/kernel"] == (1, 16, 16, 3, 16)
    assert "blocks/attn/k_bias" not in shapes


def test_bad_frame_size_raises():
    cfg = UMTConfig(image_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_frames=1)
    params = init_vision(cfg, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="32"):
        vision_apply(params, cfg, jnp.zeros((1, 1, 48, 48, 3)))


# ----------------------------------------------------------------------------- torch parity


def _random_checkpoint(path, cfg: UMTConfig, d: int, seed: int = 0) -> None:
    """Random weights in the original key names (non-trivial norms and biases)."""
    torch.manual_seed(seed)
    enc = torch_umt.UMTEncoder(cfg)
    proj = torch_umt.Projector(cfg.hidden_size, d)
    out = {}
    for prefix, mod in ((torch_umt.VISION_PREFIX, enc), (torch_umt.PROJECTOR_PREFIX, proj)):
        for k, v in mod.state_dict().items():
            if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k.endswith("layernorm.weight"):
                v = 0.5 + torch.rand_like(v)
            elif v.ndim == 1:
                v = 0.3 * torch.randn_like(v)
            else:
                fan_in = v[0].numel()
                v = torch.randn_like(v) / fan_in**0.5
            out[prefix + k] = v.numpy().astype(np.float32)
    save_file(out, str(path))


TINY = dict(patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=4)


@pytest.mark.parametrize(
    "image_size,frames,qkv_bias",
    [(64, 4, True), (64, 1, True), (64, 8, True), (224, 2, True), (32, 2, False)],
    ids=["448path-T4", "image-T1", "448path-T8-time-interp", "224path-T2", "no-qkv-bias"],
)
def test_parity_with_torch_reference(tmp_path, image_size, frames, qkv_bias):
    cfg = UMTConfig(image_size=image_size, num_frames=frames, qkv_bias=qkv_bias, **TINY)
    d = 24
    _random_checkpoint(tmp_path / "model.safetensors", cfg, d)
    params, tensors = _load(tmp_path / "model.safetensors", cfg)
    enc = torch_umt.load_prefixed(torch_umt.UMTEncoder(cfg), tensors, torch_umt.VISION_PREFIX)
    proj = torch_umt.load_prefixed(torch_umt.Projector(cfg.hidden_size, d), tensors, torch_umt.PROJECTOR_PREFIX)

    clips = np.random.RandomState(1).randn(2, frames, image_size, image_size, 3).astype(np.float32)
    with torch.no_grad():
        want = enc(torch.from_numpy(clips).permute(0, 1, 4, 2, 3))
        want_proj = proj(want).numpy()
        want = want.numpy()
    got = jax.jit(lambda p, x: vision_apply(p, cfg, x))(params["vision"], jnp.asarray(clips))
    g = cfg.image_size // cfg.patch_size
    assert got.shape == (2, frames * g * g, cfg.hidden_size)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
    got_proj = projector_apply(params["projector"], jnp.asarray(want))
    np.testing.assert_allclose(np.asarray(got_proj), want_proj, atol=1e-4, rtol=0)


def test_bf16_runs_close():
    cfg = UMTConfig(image_size=64, num_frames=2, **TINY)
    params = nn.unbox(init_vision(cfg, jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 64, 64, 3))
    ref = vision_apply(params, cfg, x)
    cfg16 = cfg.replace(dtype="bfloat16")
    got = vision_apply(params, cfg16, x)
    assert got.dtype == jnp.bfloat16
    assert float(jnp.abs(got.astype(jnp.float32) - ref).max()) < 0.15


# ----------------------------------------------------------------------------- fixture parity


def _video16() -> np.ndarray:
    return np.random.RandomState(1029).randint(0, 256, (16, 448, 448, 3), np.uint8)


def _normalise(u8: np.ndarray) -> np.ndarray:
    return ((u8.astype(np.float64) * (1 / 255)).astype(np.float32) - MEAN) / STD


def _fixture_params(tiny_vcf_dir, cfg):
    params, _ = _load(tiny_vcf_dir / "model.safetensors", cfg)
    return params


def test_preprocess_matches_fixture(ref):
    want = ref["preprocess/pixel_values16_frame0"]
    got = _normalise(_video16()[:1])[0].transpose(2, 0, 1)
    np.testing.assert_array_equal(got, want)


def _vit_vs_fixture(ref, tiny_vcf_dir, frames: int, clips: list[int]) -> float:
    cfg, _ = _fixture_cfg(tiny_vcf_dir, frames)
    params = _fixture_params(tiny_vcf_dir, cfg)
    video = _normalise(_video16()).reshape(-1, frames, 448, 448, 3)
    want = ref["L4/vit_out"] if frames == 4 else ref["L8/vit_out_clip0"][None]
    if len(want) <= max(clips):
        pytest.skip(f"the fixture holds {len(want)} clip(s) of L{frames} ViT output (tests/fixtures subset)")
    run = jax.jit(lambda p, x: vision_apply(p, cfg, x))
    err = 0.0
    for c in clips:
        got = np.asarray(run(params["vision"], jnp.asarray(video[c : c + 1])))[0]
        err = max(err, float(np.abs(got - want[c]).max()))
    return err


def test_vit_fixture_L4_clip0(ref, tiny_vcf_dir):
    err = _vit_vs_fixture(ref, tiny_vcf_dir, 4, [0])
    assert err <= 1e-4, err


@pytest.mark.heavy
def test_vit_fixture_L4_all_clips(ref, tiny_vcf_dir):
    err = _vit_vs_fixture(ref, tiny_vcf_dir, 4, [0, 1, 2, 3])
    assert err <= 1e-4, err


@pytest.mark.heavy
def test_vit_fixture_L8_clip0(ref, tiny_vcf_dir):
    err = _vit_vs_fixture(ref, tiny_vcf_dir, 8, [0])
    assert err <= 1e-4, err


def test_projector_fixture(ref, tiny_vcf_dir):
    cfg, hf = _fixture_cfg(tiny_vcf_dir)
    params = _fixture_params(tiny_vcf_dir, cfg)
    tome = ref["L4/tome_out"]
    got = Projector(hf["hidden_size"]).apply({"params": params["projector"]}, jnp.asarray(tome))
    want = ref["L4/proj_out"]
    got = np.asarray(got).reshape(want.shape)
    err = float(np.abs(got - want).max())
    assert err <= 1e-5, err
