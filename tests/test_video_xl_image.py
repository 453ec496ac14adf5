"""Video-XL single images: anyres + unires (lvjax/families/video_xl/image.py) against independent references.

- best resolution, resize/pad and the crop division: transformers' LLaVA-NeXT helpers
  (`image_processing_utils.select_best_resolution`, which takes (height, width) where the
  original takes (width, height); `LlavaNextImageProcessorPil.get_image_patches`, whose first
  patch is the base image unires drops; `image_transforms.divide_to_patches`), on the released
  `image_grid_pinpoints` (finetune_{i,v}.sh: every (336·i, 336·j) with i·j ≤ 49 but 1×1, by i then j);
- the 2×2 pooling of each crop: torch `avg_pool2d` in the original's order of operations;
- tokens per image for several aspect ratios;
- end to end on the tiny original (tests/fixtures/videoxl_original): `lvjax.load(dir).answer(png)`
  and `lvjax answer --video png` give the ids of the LLM fed tokens built from transformers' crops
  through the fixture-verified frame path.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_processing_utils import (
    select_best_resolution as hf_select_best_resolution,
)
from transformers.image_transforms import divide_to_patches as hf_divide_to_patches
from transformers.image_utils import PILImageResampling
from transformers.models.llava_next.image_processing_pil_llava_next import (
    LlavaNextImageProcessorPil,
)

from lvjax.config import ConfigError
from lvjax.families.base import Encoded
from lvjax.families.video_xl import FAMILY
from lvjax.families.video_xl.image import (
    ImageRoute,
    anyres_crops,
    divide,
    image_tokens,
    parse_pinpoints,
    select_best_resolution,
)
from lvjax.families.video_xl.vision import clip_preprocess, encode_pixels

RELEASED = [(336 * i, 336 * j) for i in range(1, 50) for j in range(1, 50) if i * j <= 49 and (i, j) != (1, 1)]
# (height, width) of test images: small, square, landscape, portrait, very tall, very wide, odd sizes
SIZES = [(90, 200), (336, 336), (1080, 1920), (500, 375), (4000, 300), (37, 1201), (777, 1013)]
QUESTION = "What is in the image?"


def hf_patches(image: np.ndarray, pinpoints, patch: int) -> np.ndarray:
    """transformers' LLaVA-NeXT crops (base image dropped), (N, patch, patch, 3) uint8."""
    hw = [[h, w] for w, h in pinpoints]  # transformers takes (height, width)
    out = LlavaNextImageProcessorPil().get_image_patches(image.transpose(2, 0, 1), hw, size=(patch, patch),
                                                         patch_size=patch, resample=PILImageResampling.BICUBIC)
    return np.stack([p.transpose(1, 2, 0) for p in out[1:]])


@pytest.mark.parametrize("hw", SIZES)
def test_best_resolution_matches_transformers(hw):
    h, w = hw
    best_h, best_w = hf_select_best_resolution((h, w), [(b, a) for a, b in RELEASED])
    assert select_best_resolution((w, h), RELEASED) == (best_w, best_h)


def test_best_resolution_rule():
    # Everything at least the image's size keeps it whole: the least area wins, the first listed on a tie.
    assert select_best_resolution((200, 90), RELEASED) == (336, 672)
    assert select_best_resolution((336, 336), RELEASED) == (336, 672)
    assert select_best_resolution((200, 90), [(672, 336), (336, 672)]) == (672, 336)
    assert select_best_resolution((375, 500), RELEASED) == (672, 672)


@pytest.mark.parametrize("hw", SIZES)
def test_crops_match_transformers(hw):
    """select → aspect-kept bicubic resize → centred black padding → row-major crops, bit-identical."""
    image = np.random.RandomState(hw[0] * 7 + hw[1]).randint(0, 256, (*hw, 3), np.uint8)
    crops, (rows, cols) = anyres_crops(image, RELEASED, 336)
    ref = hf_patches(image, RELEASED, 336)
    assert crops.dtype == np.uint8 and crops.shape == ref.shape and np.array_equal(crops, ref)
    w, h = select_best_resolution((hw[1], hw[0]), RELEASED)
    assert (rows, cols) == (h // 336, w // 336) and len(crops) == rows * cols


def test_divide_matches_transformers():
    image = np.random.RandomState(1).randint(0, 256, (3 * 8, 5 * 8, 3), np.uint8)
    ref = np.stack([p.transpose(1, 2, 0) for p in hf_divide_to_patches(image.transpose(2, 0, 1), 8)])
    np.testing.assert_array_equal(divide(image, 8), ref)


@pytest.mark.parametrize("size, tokens", [
    ((336, 336), 2 * 144),      # no 1×1 pinpoint: a square image takes 1 column × 2 rows
    ((1920, 1080), 24 * 144),   # 16:9 → 2016×1344: 6 × 4 crops
    ((375, 500), 4 * 144),      # 3:4 → 672×672
    ((300, 4000), 12 * 144),    # very tall → 336×4032
    ((1201, 37), 4 * 144),      # very wide → 1344×336
    ((4000, 4000), 49 * 144),   # large square → 2352×2352, the 49-crop maximum
])
def test_tokens_per_image(size, tokens):
    w, h = hf_select_best_resolution(size[::-1], [(b, a) for a, b in RELEASED])[::-1]
    assert (w // 336) * (h // 336) * 144 == tokens
    assert image_tokens(size, RELEASED, 336, 144) == tokens


def test_pinpoint_forms():
    assert parse_pinpoints([[112, 224], [224, 112]], 112, "c") == ((112, 224), (224, 112))
    assert parse_pinpoints("[(336, 672), (672, 336)]", 336, "c") == ((336, 672), (672, 336))
    # the range form: every grid between the first and the last, times the crop size (mm_utils.py)
    assert parse_pinpoints("(1x1),(1x2),(2x2)", 112, "c") == ((112, 112), (112, 224), (224, 112), (224, 224))
    assert parse_pinpoints(None, 336, "c") is None


@pytest.mark.parametrize("fields, match", [
    ({"image_grid_pinpoints": [[112, 200]]}, r"image_grid_pinpoints=\[\[112, 200\]\].*not a multiple of the 112"),
    ({"image_grid_pinpoints": [[112]]}, r"image_grid_pinpoints=.*not a \[width, height\] pair"),
    ({"image_grid_pinpoints": "big"}, r"image_grid_pinpoints='big' is not a list"),
    ({"image_grid_pinpoints": []}, r"image_grid_pinpoints=\[\] must be a non-empty list"),
    ({"image_aspect_ratio": 3}, r"image_aspect_ratio=3 must be a string"),
    ({"mm_patch_merge_type": ["unires"]}, r"mm_patch_merge_type=\['unires'\] must be a string"),
])
def test_malformed_fields(recorded, tmp_path, fields, match):
    folder = recorded("videoxl").model_dir
    hf = {**json.loads((folder / "config.json").read_text()), **fields}
    with pytest.raises(ConfigError, match=match):
        FAMILY.config_from_hf(hf, str(folder / "config.json"))


@pytest.mark.parametrize("route, match", [
    (ImageRoute("square", "unires", ((112, 224),)), "image_aspect_ratio='square'"),
    (ImageRoute(None, "unires", ((112, 224),)), "image_aspect_ratio=None"),
    (ImageRoute("anyres", "spatial_unpad", ((112, 224),)), "mm_patch_merge_type='spatial_unpad'"),
    (ImageRoute("anyres", "unires", None), "image_grid_pinpoints is missing"),
])
def test_unsupported_route_names_the_field(route, match):
    with pytest.raises(ConfigError, match=match):
        route.check()


# ----------------------------------------------------------------------------- the tiny original


@pytest.fixture(scope="module")
def loaded(recorded):
    import lvjax

    return lvjax.load(str(recorded("videoxl").model_dir))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 200×90 PNG: with pinpoints [[112, 224], [224, 112]] → 224×112, 1 row × 2 crops."""
    image = np.random.RandomState(7).randint(0, 256, (90, 200, 3), np.uint8)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(image).save(path)
    return image, str(path)


def reference_tokens(model, image):
    """Crops by transformers, then the frame path (CLIP → projector → 2×2 pool), which the fixture verifies."""
    crops = hf_patches(image, model.config.image.pinpoints, model.config.clip.image_size)
    tokens, _ = encode_pixels(model.params, jnp.asarray(clip_preprocess(crops, model.config.preprocess)),
                              cfg=model.config)
    return crops, np.asarray(tokens)


def test_image_tokens_and_torch_pool(loaded, photo):
    image, path = photo
    assert loaded.config.image == ImageRoute("anyres", "unires", ((112, 224), (224, 112)))
    enc = loaded.encode_video(path, intermediates=True)
    crops, ref = reference_tokens(loaded, image)
    np.testing.assert_array_equal(enc.stages["crops"], crops)
    assert enc.cache["video_xl_image_grid"] == (1, 2) and enc.visual.shape == (2 * 16, 64)
    # unires pooling, the original's steps: view (N, 8, 8, D) → (N, D, 8, 8) → avg_pool2d(2) → (N, 16, D) → (N·16, D)
    proj = torch.from_numpy(np.array(enc.stages["projector"], np.float32))
    n, _, d = proj.shape
    x = proj.view(n, 8, 8, d).permute(0, 3, 1, 2).contiguous()
    pooled = torch.nn.functional.avg_pool2d(x, 2).flatten(2, 3).permute(0, 2, 1).contiguous().flatten(0, 1)
    np.testing.assert_allclose(np.asarray(enc.visual), pooled.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(enc.visual), ref, rtol=1e-6, atol=1e-6)
    # an (H, W, 3) array is the same image
    np.testing.assert_array_equal(np.asarray(loaded.encode_video(image).visual), np.asarray(enc.visual))


def test_png_answer_end_to_end(loaded, photo):
    image, path = photo
    text, report = loaded.answer(path, QUESTION, max_new_tokens=6, compression_ratio=4)
    assert report["frames"] == 1 and report["image_crops"] == [1, 2]
    assert report["visual_tokens"] == 32 and report["window_ratios"] == [4] and report["summary_tokens"] == 8
    frames = loaded.frames(path)
    _, ref = reference_tokens(loaded, image)
    ref_text, ref_report = loaded.answer_encoded(Encoded(jnp.asarray(ref), frames, {}), QUESTION, max_new_tokens=6,
                                                 compression_ratio=4)
    assert report["token_ids"] == ref_report["token_ids"] and text == ref_text
    assert report["prompt_tokens"] == ref_report["prompt_tokens"]
    # the default ratios: step-random over [2, 4, 8] from a fresh default_rng(42), as a fresh original Memory
    _, mixed = loaded.answer(path, QUESTION, max_new_tokens=2)
    assert mixed["window_ratios"][0] in (2, 4, 8) and mixed["visual_tokens"] == 32


def test_cli_answer_on_image(loaded, photo, capsys, recorded):
    from lvjax.cli import main as cli

    _, path = photo
    argv = ["answer", "--model", str(recorded("videoxl").model_dir), "--video", path, "--question", QUESTION,
            "--max-new-tokens", "6", "--compression-ratio", "4", "--json"]
    assert cli(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, report = loaded.answer(path, QUESTION, max_new_tokens=6, compression_ratio=4)
    assert out["report"]["image_crops"] == [1, 2] and out["report"]["token_ids"] == report["token_ids"]
