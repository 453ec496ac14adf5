"""Video-XL's single-image route: `image_aspect_ratio` anyres + `mm_patch_merge_type` unires.

What the original does with one image (`videoxl/mm_utils.py::process_anyres_image`,
`model/llava_arch.py::get_image_features`, `llava_qwen.py::generate`), all sizes (width, height):

1. `select_best_resolution(image.size, image_grid_pinpoints)`: for each pinpoint (w, h) the
   aspect-kept downscale `s = min(w / W, h / H)`, effective = min(int(W·s)·int(H·s), W·H),
   wasted = w·h − effective; the first pinpoint with the largest effective (ties: least
   wasted) wins.
2. `resize_and_pad_image`: the side with the smaller scale is filled, the other becomes
   min(ceil(side · scale), target) (PIL `resize`, bicubic); pasted on black at
   ((w − new_w) // 2, (h − new_h) // 2).
3. `divide_to_patches`: crops of the CLIP size (336; `crop_size["height"]`), row-major (rows
   top to bottom, within a row left to right) — h/336 rows × w/336 columns.
4. A base image (`image.resize((336, 336))`) is put first and every crop goes through
   `CLIPImageProcessor` (a 336² crop is only rescaled and normalised).
5. CLIP → `mlp2x_gelu` for all of them; unires then **drops the base image**, views the crops
   as (rows, cols, 24, 24, D) → (rows·cols, 24, 24, D) and average-pools each 2×2 (the kernel
   is hard-coded to 2, not `mm_spatial_pool_stride`) → 144 tokens per crop, crop-major, each
   row-major 12×12. No newline token is added (`image_newline` exists only for "unpad" merge
   types and is never used by unires).
6. The LLM sees these rows·cols·144 tokens exactly as it sees frames: `<image>` expanded to
   that many placeholders, `beacon_skip_first` = the `<image>` position, `beacon_skip_last`
   = it + the tokens (`generate()` computes both; the ImageBench/MMBench script passes none),
   windows of `beacon_window` tokens with VSTs, the same ratios.

The base image's CLIP pass only feeds the dropped row, so it is not computed here. The lmms-eval
wrapper (`eval/videoxl.py`) passes `beacon_skip_last` = first + 144·(crops + 1) for image tasks
(the base counted), which stretches the last visual window 144 tokens into the question; this
port follows `generate()`'s own count (the crops only).

`image_grid_pinpoints` may be a list of [w, h] pairs, the same as a string ("[(336, 672), …]"),
or the range form "(1x1),…,(6x6)" (every grid between the first and the last, times the CLIP
size). The released config lists 1×2 … 49×1 crops of 336 (up to 49 crops, 7,056 tokens).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from typing import Any

import numpy as np

from lvjax.config import ConfigError
from lvjax.video.preprocess import resize_frames

UNIRES_POOL = 2  # `kernel_size = 2` in the unires branch of get_image_features


@dataclasses.dataclass(frozen=True)
class ImageRoute:
    """The config.json fields that route a single image (kept verbatim for export elsewhere).

    aspect_ratio: `image_aspect_ratio` ('anyres' / 'anyres_max_N' take the anyres path);
    merge_type: `mm_patch_merge_type` ('unires'); pinpoints: `image_grid_pinpoints` as
    ((width, height), …) in pixels, None when absent.
    """

    aspect_ratio: str | None = None
    merge_type: str | None = None
    pinpoints: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def from_hf(cls, hf: dict, patch: int, source: str) -> "ImageRoute":
        """Read and check the three fields (a `ConfigError` naming the field when malformed)."""
        out = {}
        for key, name in (("image_aspect_ratio", "aspect_ratio"), ("mm_patch_merge_type", "merge_type")):
            value = hf.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{source}: {key}={value!r} must be a string (e.g. "
                                  f"{'anyres' if name == 'aspect_ratio' else 'unires'!r})")
            out[name] = value
        return cls(pinpoints=parse_pinpoints(hf.get("image_grid_pinpoints"), patch, source), **out)

    def check(self, source: str = "config.json") -> tuple[tuple[int, int], ...]:
        """The pinpoints, or a `ConfigError` naming the field when the config routes images otherwise."""
        anyres = self.aspect_ratio == "anyres" or (self.aspect_ratio is not None and "anyres_max" in self.aspect_ratio)
        if not anyres:
            raise ConfigError(f"{source}: image_aspect_ratio={self.aspect_ratio!r}: single images need 'anyres' "
                              "(the released Video-XL config; the original's generate() takes images only that way)")
        if self.merge_type != "unires":
            raise ConfigError(f"{source}: mm_patch_merge_type={self.merge_type!r}: single images are supported "
                              "with 'unires' (the released Video-XL config) only")
        if not self.pinpoints:
            raise ConfigError(f"{source}: image_grid_pinpoints is missing: image_aspect_ratio='anyres' needs the "
                              "list of [width, height] resolutions")
        return self.pinpoints


def parse_pinpoints(value: Any, patch: int, source: str) -> tuple[tuple[int, int], ...] | None:
    """`image_grid_pinpoints` → ((width, height), …) pixels; each a positive multiple of `patch`."""
    if value is None:
        return None
    field = f"{source}: image_grid_pinpoints={_short(value)}"
    pairs = value
    if isinstance(value, str):
        if "x" in value:  # "(1x1),...,(6x6)": every grid from the first to the last, times the crop size
            found = [tuple(map(int, m)) for m in re.findall(r"\((\d+)x(\d+)\)", value)]
            if not found:
                raise ConfigError(f"{field} is not a list of resolutions nor a '(AxB),…,(CxD)' grid range")
            (a0, a1), (b0, b1) = found[0], found[-1]
            pairs = [(i * patch, j * patch) for i in range(a0, b0 + 1) for j in range(a1, b1 + 1)]
        else:
            try:
                pairs = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ConfigError(f"{field} is not a list of [width, height] resolutions") from None
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise ConfigError(f"{field} must be a non-empty list of [width, height] resolutions")
    out = []
    for p in pairs:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                      and v > 0 for v in p)):
            raise ConfigError(f"{field}: entry {p!r} is not a [width, height] pair of positive integers")
        if p[0] % patch or p[1] % patch:
            raise ConfigError(f"{field}: entry {list(p)} is not a multiple of the {patch}-pixel crop "
                              "(the crops and the unires grid would disagree)")
        out.append((int(p[0]), int(p[1])))
    return tuple(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def select_best_resolution(size: tuple[int, int], pinpoints) -> tuple[int, int]:
    """The (width, height) pinpoint for an image of `size` = (width, height) (rule 1 of the module doc)."""
    width, height = size
    best, best_eff, best_waste = None, 0, float("inf")
    for w, h in pinpoints:
        scale = min(w / width, h / height)
        eff = min(int(width * scale) * int(height * scale), width * height)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (w, h), eff, waste
    return best


def resize_and_pad(image: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) → (h, w, 3) for target = (w, h): aspect-kept PIL bicubic resize, centred on black."""
    height, width = image.shape[:2]
    tw, th = target
    sw, sh = tw / width, th / height
    if sw < sh:
        nw, nh = tw, min(math.ceil(height * sw), th)
    else:
        nw, nh = min(math.ceil(width * sh), tw), th
    resized = resize_frames(image[None], (nh, nw))[0]
    out = np.zeros((th, tw, 3), np.uint8)
    y, x = (th - nh) // 2, (tw - nw) // 2
    out[y:y + nh, x:x + nw] = resized
    return out


def divide(image: np.ndarray, patch: int) -> np.ndarray:
    """(h, w, 3) with h, w multiples of `patch` → (h/patch · w/patch, patch, patch, 3), row-major."""
    h, w = image.shape[:2]
    rows, cols = h // patch, w // patch
    return image.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, patch, patch, 3)


def anyres_crops(image: np.ndarray, pinpoints, patch: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 (H, W, 3) → (crops (rows·cols, patch, patch, 3) uint8, (rows, cols)) — the unires crops
    (the base image, which unires drops, is not made)."""
    height, width = image.shape[:2]
    w, h = select_best_resolution((width, height), pinpoints)
    return divide(resize_and_pad(image, (w, h)), patch), (h // patch, w // patch)


def image_tokens(size: tuple[int, int], pinpoints, patch: int, tokens_per_crop: int) -> int:
    """Visual tokens the LLM gets for an image of `size` = (width, height)."""
    w, h = select_best_resolution(size, pinpoints)
    return (w // patch) * (h // patch) * tokens_per_crop
