"""UMT positional table: NumPy kernels vs torch.nn.functional.interpolate, and vs the fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvjax.models.pos_embed import (
    resize_cubic,
    resize_linear,
    sinusoid_table,
    umt_pos_embed,
    vision_pos_embed,
)
from lvjax.models.umt import UMTConfig
from tests.torch_umt import sinusoid_loop as _sinusoid_loop
from tests.torch_umt import torch_pos_embed as _torch_pos_embed


def test_sinusoid_table_matches_loop():
    np.testing.assert_array_equal(sinusoid_table(50, 24), _sinusoid_loop(50, 24))


@pytest.mark.parametrize("n_in,n_out", [(14, 28), (14, 4), (14, 32), (5, 3), (3, 11), (14, 14), (1, 4), (6, 1)])
def test_resize_kernels_match_torch(n_in, n_out):
    # values in [-1, 1] like the sinusoid table. torch's CPU kernel evaluates the cubic weights
    # in float32 (with fused multiply-adds), so agreement is to float32 rounding of the
    # weights (~1e-6 on small, strongly upsampled grids), not bitwise.
    rng = np.random.RandomState(n_in * 100 + n_out)
    x = rng.uniform(-1, 1, (2, 3, n_in, n_in)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x), size=(n_out, n_out), mode="bicubic", align_corners=False).numpy()
    got = resize_cubic(resize_cubic(x, n_out, 3), n_out, 2).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    x1 = rng.uniform(-1, 1, (4, 3, n_in)).astype(np.float32)
    want1 = F.interpolate(torch.from_numpy(x1), size=n_out, mode="linear", align_corners=False).numpy()
    np.testing.assert_allclose(resize_linear(x1, n_out, 2).astype(np.float32), want1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("image_size", [224, 448, 64])
@pytest.mark.parametrize("t", [1, 4, 8, 16])
def test_pos_embed_matches_torch_pipeline(image_size, t):
    d = 48
    got = umt_pos_embed(image_size, 16, d, t, ckpt_num_frame=4)
    want = _torch_pos_embed(image_size, 16, d, t)
    g = image_size // 16
    assert got.shape == (t * g * g, d) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_pos_embed_real_width():
    """UMT-L width (1024) at 448 px, 8 frames."""
    got = umt_pos_embed(448, 16, 1024, 8)
    np.testing.assert_allclose(got, _torch_pos_embed(448, 16, 1024, 8), atol=1e-6, rtol=0)


@pytest.mark.parametrize("frames", [4, 8])
def test_pos_embed_matches_fixture(ref, tiny_vcf_dir, frames):
    import json

    hf = json.loads((tiny_vcf_dir / "config.json").read_text())
    cfg = UMTConfig.from_hf(dict(hf, mm_local_num_frames=frames))
    want = ref[f"L{frames}/vit_pos_embed"][0]
    got = vision_pos_embed(cfg)
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    assert err <= 1e-5, err
