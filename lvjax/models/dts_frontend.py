"""The front end of Video-XL-Pro and Video-XL-2: frames → SigLIP → 24×24 → groups of 4 → DTS → mlp2x_gelu → 2×2 pool.

    pixels (F, 384, 384, 3)  `preprocess_frames`: PIL bicubic 384², (x/255 − 0.5)/0.5, float16 and back
      → SigLIP (last layer deleted)          (F, 27·27, C)        `vit_features`
      → bilinear 27 → 24 (align_corners=False, no antialias)       `interpolated` (F, 24, 24, C)
      → frame padding to a multiple of 4: frame i repeated `pad_repeat_counts[i]` times (F' frames)
      → the original's `view(G, C, 4, 24, 24)` of the (F', C, 24, 24) tensor (see `group_frames`)
      → DTS `SiglipAE` (G, 4, 24, 24, C) → (G, 1, 24, 24, C)       `dts`
      → mm_projector (G, 576, D)                                     `projector`
      → avg_pool2d(2) → (G, 144, D)                                  `pooled`

Padding: Video-XL-2 repeats the last frame (`pad_counts_last`); Video-XL-Pro duplicates
`4 − F % 4` frames chosen by `torch.randperm(F)` (`pad_counts_random`, drawn with NumPy
instead: torch's generator cannot be reproduced) and repeats the last frame when F < 4.

Prompt side (`time_prompt_ids`, `visual_sequence`): per group g, the tokens of a time text
for `timestamps[::4][g]` (of the *unpadded* frames) followed by 144 `<|vision_pad|>` ids; the
visual sequence is `embed(time ids)` with the pad rows replaced, in order, by the pooled tokens;
`splice` puts it at the `<image>` placeholder.

Parameter tree: {"vision_tower": SigLIP (models/siglip.py), "sae": DTS (models/dts.py),
"mm_projector": {mlp_0, mlp_2}}; HF keys `model.vision_tower.vision_tower.vision_model.*`,
`model.sae.*`, `model.mm_projector.{0,2}.*` (`frontend_rules`). The HF folder also has a
`vision_tower/` SigLIP folder (its config gives the ViT sizes; `write_vision_folder` writes it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from lvjax.config import ConfigError, check_sizes, read_json
from lvjax.convert.files import save_safetensors
from lvjax.convert.table import (
    CONV2D,
    CONV3D,
    IDENTITY,
    LINEAR,
    POINTWISE_CONV1D,
    POINTWISE_CONV3D,
    Rule,
)
from lvjax.models.dts import SiglipAE
from lvjax.models.projector import MLP2xGelu
from lvjax.models.siglip import SiglipConfig, SiglipVisionModel
from lvjax.models.stack import chunked_map
from lvjax.video.preprocess import normalize, preprocess
from lvjax.video.sampling import rounded_timestamps

VISION_FOLDER = "vision_tower"
VISION_PREFIX = "model.vision_tower.vision_tower."  # + the SigLIP folder's own keys (`vision_model.*`)
GROUP = 4  # frames per DTS group
DTS_GRID = 24  # ViT grid after interpolation
PRO_TIME_FORMAT = "Time {t:06.1f}s:"  # Video-XL-Pro: 10 tokens with the Qwen2 tokenizer
XL2_TIME_FORMAT = "Time {t}s:"  # Video-XL-2: no zero padding (token count varies)


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
    """SigLIP sizes (from `vision_tower/config.json`), the LLM width `hidden_size` and `mm_hidden_size`."""

    vision: SiglipConfig
    hidden_size: int
    mm_hidden_size: int
    pool_stride: int = 2
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def tokens_per_group(self) -> int:
        return (DTS_GRID // self.pool_stride) ** 2

    def replace(self, **kw) -> "FrontendConfig":
        return dataclasses.replace(self, **kw)

    def describe(self) -> dict:
        """The vision sizes `lvjax info` prints."""
        v = self.vision
        return {"tower": "siglip+dts", "hidden_size": v.hidden_size, "layers": v.num_layers, "image_size": v.image_size,
                "patch_size": v.patch_size, "tokens_per_group": self.tokens_per_group}

    @classmethod
    def from_hf(cls, hf: dict, source: str) -> "FrontendConfig":
        """From the main `config.json` dict (`source` = its path) and `<folder>/vision_tower/config.json`."""
        for key, want in (("mm_projector_type", "mlp2x_gelu"), ("mm_spatial_pool_mode", "average")):
            if hf.get(key, want) != want:
                raise ConfigError(f"{source}: {key}={hf.get(key)!r} is not supported (expected {want!r})")
        vision_cfg = os.path.join(os.path.dirname(os.path.abspath(source)), VISION_FOLDER, "config.json")
        if not os.path.isfile(vision_cfg):
            raise ConfigError(f"{vision_cfg}: file not found (the SigLIP sub-folder {VISION_FOLDER}/ gives the "
                              "vision sizes; it sits next to config.json)")
        vision_hf = read_json(vision_cfg)
        check_sizes(vision_hf, vision_cfg)
        vision = SiglipConfig.from_hf(vision_hf, vision_cfg)
        mm_hidden = hf.get("mm_hidden_size", vision.hidden_size)
        if mm_hidden != vision.hidden_size:
            raise ConfigError(f"{source}: mm_hidden_size={mm_hidden!r} differs from the SigLIP width "
                              f"{vision.hidden_size} ({vision_cfg})")
        if vision.hidden_size % 32:
            raise ConfigError(f"{vision_cfg}: hidden_size {vision.hidden_size} is not a multiple of 32 (DTS GroupNorm)")
        stride = hf.get("mm_spatial_pool_stride", 2)
        if not isinstance(stride, int) or stride < 1 or DTS_GRID % stride:
            raise ConfigError(f"{source}: mm_spatial_pool_stride={stride!r} must divide {DTS_GRID}")
        return cls(vision=vision, hidden_size=int(hf["hidden_size"]), mm_hidden_size=int(mm_hidden), pool_stride=stride)

    def with_dtypes(self, dtype: str, param_dtype: str) -> "FrontendConfig":
        return self.replace(vision=self.vision.replace(dtype=dtype, param_dtype=param_dtype), dtype=dtype,
                            param_dtype=param_dtype)


# ----------------------------------------------------------------------------- parameters


def _modules(cfg: FrontendConfig):
    return (SiglipVisionModel(cfg.vision), SiglipAE(cfg.mm_hidden_size, GROUP, cfg.dtype, cfg.param_dtype),
            MLP2xGelu(cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype))


def init_frontend(cfg: FrontendConfig, key: jax.Array) -> dict:
    """Random boxed params {"vision_tower", "sae", "mm_projector"}."""
    k1, k2, k3 = jax.random.split(key, 3)
    vit, sae, proj = _modules(cfg)
    s, c = cfg.vision.image_size, cfg.mm_hidden_size
    return {
        "vision_tower": vit.init(k1, jnp.zeros((1, s, s, 3)))["params"],
        "sae": sae.init(k2, jnp.zeros((1, GROUP, 2, 2, c)))["params"],
        "mm_projector": proj.init(k3, jnp.zeros((1, 1, c)))["params"],
    }


def siglip_rules(cfg: SiglipConfig, root: str, prefix: str) -> list[Rule]:
    """SigLIP keys `{prefix}embeddings.*`, `{prefix}encoder.layers.{i}.*`, `{prefix}post_layernorm.*`."""
    n, lay = cfg.num_layers, f"{prefix}encoder.layers.{{i}}."
    rules = [Rule(f"{prefix}embeddings.patch_embedding.weight", f"{root}embeddings/patch_embedding/kernel", CONV2D),
             Rule(f"{prefix}embeddings.patch_embedding.bias", f"{root}embeddings/patch_embedding/bias"),
             Rule(f"{prefix}embeddings.position_embedding.weight", f"{root}embeddings/position_embedding/embedding")]
    for hf, path in (("self_attn.q_proj", "self_attn/q_proj"), ("self_attn.k_proj", "self_attn/k_proj"),
                     ("self_attn.v_proj", "self_attn/v_proj"), ("self_attn.out_proj", "self_attn/out_proj"),
                     ("mlp.fc1", "mlp/fc1"), ("mlp.fc2", "mlp/fc2")):
        rules.append(Rule(f"{lay}{hf}.weight", f"{root}layers/{path}/kernel", LINEAR, n))
        rules.append(Rule(f"{lay}{hf}.bias", f"{root}layers/{path}/bias", IDENTITY, n))
    for norm in ("layer_norm1", "layer_norm2"):
        rules.append(Rule(f"{lay}{norm}.weight", f"{root}layers/{norm}/scale", IDENTITY, n))
        rules.append(Rule(f"{lay}{norm}.bias", f"{root}layers/{norm}/bias", IDENTITY, n))
    rules.append(Rule(f"{prefix}post_layernorm.weight", f"{root}post_layernorm/scale"))
    rules.append(Rule(f"{prefix}post_layernorm.bias", f"{root}post_layernorm/bias"))
    return rules


def dts_rules(root: str = "sae/", prefix: str = "model.sae.") -> list[Rule]:
    """`SiglipAE` keys: temporal_encoding, encoder.{0,3} (AttnBlock3D), {1,4} (TemporalAttention), {2,5} (conv)."""
    rules = [Rule(f"{prefix}temporal_encoding", f"{root}temporal_encoding")]
    for i in range(6):
        hf, lv = f"{prefix}encoder.{i}.", f"{root}encoder_{i}/"
        if i % 3 == 2:
            rules += [Rule(f"{hf}conv.weight", f"{lv}conv/kernel", CONV3D), Rule(f"{hf}conv.bias", f"{lv}conv/bias")]
            continue
        rules += [Rule(f"{hf}norm.weight", f"{lv}norm/scale"), Rule(f"{hf}norm.bias", f"{lv}norm/bias")]
        convs, kind = (("q", "k", "v", "proj_out"), POINTWISE_CONV3D) if i % 3 == 0 else (("qkv", "proj_out"), POINTWISE_CONV1D)
        for name in convs:
            rules += [Rule(f"{hf}{name}.weight", f"{lv}{name}/kernel", kind), Rule(f"{hf}{name}.bias", f"{lv}{name}/bias")]
        if i % 3 == 1:
            for rp in ("relative_position_k", "relative_position_v"):
                rules.append(Rule(f"{hf}{rp}.embeddings_table", f"{lv}{rp}/embeddings_table"))
    return rules


def frontend_rules(cfg: FrontendConfig) -> list[Rule]:
    """Conversion rules of the whole front end (roots vision_tower/, sae/, mm_projector/)."""
    rules = siglip_rules(cfg.vision, "vision_tower/", VISION_PREFIX + "vision_model.") + dts_rules()
    for i in (0, 2):
        rules += [Rule(f"model.mm_projector.{i}.weight", f"mm_projector/mlp_{i}/kernel", LINEAR),
                  Rule(f"model.mm_projector.{i}.bias", f"mm_projector/mlp_{i}/bias")]
    return rules


def write_vision_folder(out: str, cfg: FrontendConfig, tensors: dict[str, np.ndarray]) -> None:
    """Write `out/vision_tower/` so the original `SiglipVisionTower.load_model` loads it.

    config.json: the SigLIP config (`num_hidden_layers` counts the layer the original deletes).
    model.safetensors: the exported `model.vision_tower.vision_tower.*` tensors without that prefix,
    plus every other tensor an already present `vision_tower/model.safetensors` holds (the deleted
    layer and the head, carried along unchanged when the source folder had them; without them
    transformers initialises both randomly and the original discards them anyway).
    """
    folder = os.path.join(out, VISION_FOLDER)
    os.makedirs(folder, exist_ok=True)
    weights = os.path.join(folder, "model.safetensors")
    side: dict[str, np.ndarray] = {}
    if os.path.isfile(weights):
        with safe_open(weights, framework="numpy") as f:
            side = {k: f.get_tensor(k) for k in f.keys()}
    side.update({k[len(VISION_PREFIX):]: v for k, v in tensors.items() if k.startswith(VISION_PREFIX)})
    save_safetensors(side, weights, metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg.vision.to_hf(), f, indent=2)


# ----------------------------------------------------------------------------- pixels and padding


def preprocess_frames(frames: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """uint8 (F, H, W, 3) → float32 (F, S, S, 3): PIL bicubic S², ((x/255) − 0.5)/0.5, then float16 and back
    (the originals hand the tower float16 pixel values)."""
    x = preprocess(frames, cfg.vision.image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return x.astype(np.float16).astype(np.float32)


def device_pixels(frames: jax.Array) -> jax.Array:
    """uint8 (…, S, S, 3) frames already at the tower's size → float32 pixels as `preprocess_frames` gives
    them, in jnp (training: ((x/255) − 0.5)/0.5, float16 and back)."""
    return normalize(frames, (0.5,) * 3, (0.5,) * 3, xp=jnp).astype(jnp.float16).astype(jnp.float32)


def pad_counts_last(num_frames: int) -> np.ndarray:
    """Repeat counts (F,) int64 that pad to a multiple of 4 by repeating the last frame (Video-XL-2; Pro when F < 4)."""
    counts = np.ones(num_frames, np.int64)
    counts[-1] += -num_frames % GROUP
    return counts


def pad_counts_random(num_frames: int, seed: int = 0) -> np.ndarray:
    """Video-XL-Pro's `add_video` counts (F,) int64: F < 4 → `pad_counts_last`; else `4 − F % 4` distinct
    frames (when F % 4 ≠ 0) get one extra copy, chosen as `np.random.default_rng(seed).permutation(F)[:pad]`
    (the original uses `torch.randperm(F)`, whose stream NumPy cannot reproduce: pass the counts to match it)."""
    if num_frames < GROUP:
        return pad_counts_last(num_frames)
    counts = np.ones(num_frames, np.int64)
    counts[np.random.default_rng(seed).permutation(num_frames)[:-num_frames % GROUP]] += 1
    return counts


def check_pad_counts(counts: Any, num_frames: int) -> tuple[int, ...]:
    """Validate repeat counts (F,) ≥ 1 summing to a multiple of 4; returns them as a tuple (a static jit argument)."""
    arr = np.asarray(counts)
    if arr.shape != (num_frames,) or not np.issubdtype(arr.dtype, np.integer) or (arr < 1).any() or arr.sum() % GROUP:
        raise ValueError(f"pad_repeat_counts must be {num_frames} integers ≥ 1 summing to a multiple of {GROUP}, "
                         f"got {arr.tolist()}")
    return tuple(int(c) for c in arr)


# ----------------------------------------------------------------------------- the vision path


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 weights of PyTorch's bilinear resize, align_corners=False, no antialias:
    src = (dst + ½)·in/out − ½ clamped at 0, neighbours ⌊src⌋ and min(⌊src⌋ + 1, in − 1)."""
    scale = np.float32(size_in / size_out)
    src = np.maximum((np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo.astype(np.float32)
    w = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    w[rows, lo] += np.float32(1) - frac
    w[rows, hi] += frac
    return w


def interpolate(features: jax.Array, size: int = DTS_GRID) -> jax.Array:
    """(F, N, C) row-major patch features (N = g²) → (F, size, size, C), bilinear (`bilinear_matrix`)."""
    f, n, c = features.shape
    g = int(round(n**0.5))
    w = jnp.asarray(bilinear_matrix(g, size))
    x = features.reshape(f, g, g, c).astype(jnp.float32)
    x = jnp.einsum("oh,fhwc->fowc", w, x)
    return jnp.einsum("pw,fowc->fopc", w, x).astype(features.dtype)


def group_frames(x: jax.Array, counts: Sequence[int]) -> jax.Array:
    """Pad (F, h, w, C) by `counts` (repeat_interleave), then group as the original's **view** (not a permute):
    `(F', C, h, w).view(G, C, 4, h, w)`, so group g's time step t of channel c is channel (4c + t) % C of
    frame 4g + (4c + t) // C. Returns channels-last (G, 4, h, w, C)."""
    f, h, w, c = x.shape
    x = x[np.repeat(np.arange(f), counts)]
    g = x.shape[0] // GROUP
    return x.transpose(0, 3, 1, 2).reshape(g, c, GROUP, h, w).transpose(0, 2, 3, 4, 1)


def pool(x: jax.Array, stride: int) -> jax.Array:
    """avg_pool2d(stride) of (G, H·W, D) row-major tokens → (G, (H/s)·(W/s), D)."""
    g, n, d = x.shape
    side = int(round(n**0.5))
    x = x.reshape(g, side // stride, stride, side // stride, stride, d).mean(axis=(2, 4))
    return x.reshape(g, -1, d)


def vit_features(params: dict, cfg: FrontendConfig, pixels: jax.Array, frame_batch: int = 60) -> jax.Array:
    """SigLIP features of pixels (F, S, S, 3) → (F, g², C), `frame_batch` frames at a time (the original's 60)."""
    vit = SiglipVisionModel(cfg.vision)
    return chunked_map(lambda x: vit.apply({"params": params["vision_tower"]}, x), pixels, frame_batch)


@functools.partial(jax.jit, static_argnames=("cfg", "counts", "intermediates"))
def _encode(params, pixels, *, cfg: FrontendConfig, counts: tuple[int, ...], intermediates: bool):
    _, sae, proj = _modules(cfg)
    vit = vit_features(params, cfg, pixels)
    interp = interpolate(vit)
    dts, layers = sae.apply({"params": params["sae"]}, group_frames(interp, counts), return_layers=True)
    tokens = dts.reshape(dts.shape[0], -1, dts.shape[-1])  # (G, 24·24, C), row-major
    projected = proj.apply({"params": params["mm_projector"]}, tokens)
    pooled = pool(projected, cfg.pool_stride)
    stages = dict(vit_features=vit, interpolated=interp, dts_layers=layers, dts=dts, projector=projected)
    return pooled, (stages if intermediates else {})


def encode_groups(params: dict, cfg: FrontendConfig, pixels, pad_repeat_counts, *, intermediates: bool = False):
    """Visual tokens of preprocessed frames: pixels (F, S, S, 3) float32 (`preprocess_frames`) and
    repeat counts (F,) (`pad_counts_last` for Video-XL-2, `pad_counts_random` for Video-XL-Pro) →
    pooled (G, 144, D) with G = Σ counts / 4, and (when `intermediates`) a dict of stage outputs:
    vit_features (F, g², C), interpolated (F, 24, 24, C), dts_layers (6 layer outputs, channels-last),
    dts (G, 1, 24, 24, C), projector (G, 576, D). `params` holds vision_tower/, sae/, mm_projector/."""
    counts = check_pad_counts(pad_repeat_counts, len(pixels))
    return _encode(params, jnp.asarray(pixels), cfg=cfg, counts=counts, intermediates=intermediates)


# ----------------------------------------------------------------------------- prompt side


def time_prompt_ids(tokenizer: Any, timestamps: Sequence[float], fmt: str, vision_pad_id: int,
                    tokens_per_group: int = 144) -> np.ndarray:
    """The `time_embedding` ids (N,) int64: for t in `timestamps[::4]` (seconds of the unpadded frames, already
    rounded: `sampling.rounded_timestamps`), `tokenizer(fmt.format(t=t)).input_ids` then `tokens_per_group`
    × vision_pad. fmt: `PRO_TIME_FORMAT` or `XL2_TIME_FORMAT`."""
    ids: list[int] = []
    for t in list(timestamps)[::GROUP]:
        ids += list(tokenizer(fmt.format(t=t)).input_ids) + [vision_pad_id] * tokens_per_group
    return np.asarray(ids, np.int64)


def group_time_ids(tokenizer: Any, seconds: Sequence[float], bucket: int, fmt: str, slots: int,
                   exact: bool = False) -> np.ndarray:
    """Training's per-group time ids (bucket / 4, slots) int32: `fmt` of each group's first frame
    (`seconds[::4]` of the sampled frames, rounded as the original), −1 padded; groups past the frames
    are all −1. `exact`: every time text must take exactly `slots` ids (Video-XL-Pro's 10); else at most."""
    out = np.full((bucket // GROUP, slots), -1, np.int32)
    for g, t in enumerate(rounded_timestamps(seconds)[::GROUP]):
        ids = list(tokenizer(fmt.format(t=t)).input_ids)
        if len(ids) > slots or (exact and len(ids) != slots):
            raise ConfigError(f"the time prompt {fmt.format(t=t)!r} takes {len(ids)} tokens "
                              f"({'exactly' if exact else 'at most'} {slots} expected)")
        out[g, :len(ids)] = ids
    return out


def visual_sequence(time_embeds: jax.Array, time_ids: np.ndarray, pooled: jax.Array, vision_pad_id: int) -> jax.Array:
    """embed(time ids) (N, D) with the vision_pad rows replaced, in order, by pooled (G, 144, D) → (N, D)."""
    slots = np.flatnonzero(np.asarray(time_ids) == vision_pad_id)
    tokens = pooled.reshape(-1, pooled.shape[-1])
    if len(slots) != tokens.shape[0]:
        raise ValueError(f"the time prompt has {len(slots)} vision_pad slots for {tokens.shape[0]} visual tokens")
    return time_embeds.at[slots].set(tokens.astype(time_embeds.dtype))


def splice(prefix: jax.Array, visual: jax.Array, suffix: jax.Array) -> jax.Array:
    """[prefix | visual | suffix] along the sequence (each (n, D)) → the LLM's inputs_embeds."""
    return jnp.concatenate([prefix, visual.astype(prefix.dtype), suffix.astype(prefix.dtype)], axis=0)
