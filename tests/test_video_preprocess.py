"""UMTImageProcessor parity: bit-identical to the recorded reference (channels-last here)."""

from __future__ import annotations

import numpy as np
import pytest

from lvjax.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    preprocess,
    resize_frames,
)


def test_frame0_of_video16_bit_identical(ref):
    want = ref["preprocess/pixel_values16_frame0"]  # (3, 448, 448) float32, channels-first
    frame0 = np.random.RandomState(1029).randint(0, 256, (16, 448, 448, 3), np.uint8)[0]
    got = preprocess(frame0[None], 448)
    assert got.shape == (1, 448, 448, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got[0].transpose(2, 0, 1), want)
    np.testing.assert_array_equal(preprocess(frame0), got[0])  # a single (H, W, 3) frame


def test_non_square_resize_bit_identical(ref):
    raw = ref["preprocess/resize_raw_uint8"]  # (1, 180, 320, 3) uint8
    want = ref["preprocess/resize_pixel_values"]  # (1, 3, 448, 448)
    got = preprocess(raw, 448)
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), want)


def test_resize_is_pil_bicubic_and_normalize_formula():
    from PIL import Image

    rng = np.random.RandomState(0)
    frames = rng.randint(0, 256, (3, 30, 50, 3), np.uint8)
    out = resize_frames(frames, (20, 24))
    assert out.shape == (3, 20, 24, 3) and out.dtype == np.uint8
    for f, o in zip(frames, out):
        np.testing.assert_array_equal(o, np.asarray(Image.fromarray(f).resize((24, 20), Image.BICUBIC)))
    assert resize_frames(frames, (30, 50)) is frames
    x = normalize(frames)
    manual = ((frames / 255.0).astype(np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    np.testing.assert_array_equal(x, manual)
    assert x.dtype == np.float32


def test_bad_frames():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.zeros((2, 8, 8, 4), np.uint8))
