"""CLIP ViT (Hugging Face `CLIPVisionModel`) as a functional Flax Linen module, and its conversion rules.

Input: normalised images (B, H, W, 3) channels-last float; output the hidden states after the
`cfg.num_run_layers`-th encoder layer (B, 1 + grid², C), CLS first, patches row-major. That is
`hidden_states[select_layer]` of the original (before `post_layernorm`): only the layers needed
are run. Pre-LayerNorm blocks, quick-GELU MLP, q scaled by head_dim^-½.

Parameter tree (mirrors `vision_model.*`; Flax kernels are (in, out); layers stacked on a
leading `layers` axis of all `num_hidden_layers`, so the checkpoint round-trips whole):

    embeddings/class_embedding                  (C,)
    embeddings/patch_embedding/kernel           (p, p, 3, C)   no bias
    embeddings/position_embedding/embedding     (1 + grid², C)
    pre_layrnorm/{scale,bias}                   (C,)           (sic, as HF spells it)
    encoder/layers/layer_norm{1,2}/{scale,bias} (N, C)
    encoder/layers/self_attn/{q,k,v,out}_proj/{kernel (N, C, C), bias (N, C)}
    encoder/layers/mlp/fc1/{kernel (N, C, M), bias (N, M)}, fc2/{kernel (N, M, C), bias (N, C)}
    post_layernorm/{scale,bias}                 (C,)           kept for export; not used for patch features
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from lvjax.config import ConfigError
from lvjax.convert.table import CONV2D, IDENTITY, LINEAR, Rule
from lvjax.models.stack import scanned
from lvjax.models.vit_layer import ACT, EncoderLayer, P, ViTSizes, layer_norm


@dataclasses.dataclass(frozen=True)
class CLIPConfig(ViTSizes):
    """CLIP vision sizes (from the tower's `config.json`) and which hidden state is taken.

    select_layer: `mm_vision_select_layer` (−1: the last encoder layer's output, −2: the one before).
    """

    image_size: int = 336
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    layer_norm_eps: float = 1e-5
    select_layer: int = -2
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def num_run_layers(self) -> int:
        """Encoder layers run: hidden_states[k] is the output of layer k (0 = the embeddings)."""
        return self.select_layer % (self.num_hidden_layers + 1)

    @classmethod
    def from_hf(cls, hf: dict, select_layer: int, source: str = "config.json") -> "CLIPConfig":
        """From a `CLIPVisionModel` config dict (or a CLIP config holding `vision_config`)."""
        hf = hf.get("vision_config", hf)
        if hf.get("hidden_act", "quick_gelu") != "quick_gelu":
            raise ConfigError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported (CLIP uses 'quick_gelu')")
        missing = [k for k in ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        cfg = cls(**{k: hf[k] for k in ("image_size", "patch_size", "hidden_size", "intermediate_size",
                                        "num_hidden_layers", "num_attention_heads")},
                  layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)), select_layer=int(select_layer))
        if cfg.image_size % cfg.patch_size:
            raise ConfigError(f"{source}: image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        if not -cfg.num_hidden_layers <= select_layer < 0 and not 0 < select_layer <= cfg.num_hidden_layers:
            raise ConfigError(f"mm_vision_select_layer={select_layer} selects no layer of a "
                              f"{cfg.num_hidden_layers}-layer CLIP ({source})")
        return cfg


class CLIPVisionTower(nn.Module):
    """`__call__(images)`: (B, H, W, 3) → (B, 1 + grid², C) after `num_layers` encoder layers."""

    cfg: CLIPConfig
    num_layers: int

    @nn.compact
    def __call__(self, images):
        cfg = self.cfg
        dtype = jnp.dtype(cfg.dtype)
        b, hgt, wid, _ = images.shape
        if hgt != cfg.image_size or wid != cfg.image_size:
            raise ValueError(f"CLIPVisionTower: images are {hgt}×{wid}, the config expects {cfg.image_size}²")
        pd = jnp.dtype(cfg.param_dtype)
        cls = self.param("class_embedding", P(nn.initializers.normal(0.02), ("vision_embed",)), (cfg.hidden_size,), pd)
        patches = nn.Conv(cfg.hidden_size, (cfg.patch_size,) * 2, strides=(cfg.patch_size,) * 2, padding="VALID",
                          use_bias=False, dtype=dtype, param_dtype=pd,
                          kernel_init=P(nn.initializers.normal(0.02), (None, None, None, "vision_embed")),
                          name="patch_embedding")(images.astype(dtype)).reshape(b, -1, cfg.hidden_size)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b, 1, cfg.hidden_size)), patches], axis=1)
        pos = nn.Embed(cfg.grid**2 + 1, cfg.hidden_size, dtype=dtype, param_dtype=pd,
                       embedding_init=P(nn.initializers.normal(0.02), (None, "vision_embed")), name="position_embedding")
        x = x + pos(jnp.arange(x.shape[1]))[None]
        x = layer_norm(cfg, "pre_layrnorm")(x)
        if self.num_layers:
            x, _ = scanned(EncoderLayer, self.num_layers)(cfg, "quick_gelu", name="layers")(x, None)
        return nn.with_logical_constraint(x, ACT)


# The HF tree nests embeddings/, encoder/ and mlp/; the module above is flat. These two maps
# move between the module's tree and the HF-shaped lvjax tree (see the module docstring).
_EMBED = ("class_embedding", "patch_embedding", "position_embedding")


def _to_module_tree(params: dict, num_layers: int) -> dict:
    layers = jax.tree.map(lambda a: a[:num_layers], params["encoder"]["layers"])
    return {**params["embeddings"], "pre_layrnorm": params["pre_layrnorm"], "layers": layers}


def init_clip(cfg: CLIPConfig, key: jax.Array) -> dict:
    """Random boxed params of all `num_hidden_layers` layers (HF-shaped tree, see the module docstring)."""
    k1, k2 = jax.random.split(key)
    images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    flat = CLIPVisionTower(cfg, cfg.num_hidden_layers).init(k1, images)["params"]
    post = layer_norm(cfg, "post_layernorm").init(k2, jnp.zeros((1, cfg.hidden_size)))["params"]
    return {"embeddings": {k: flat[k] for k in _EMBED}, "pre_layrnorm": flat["pre_layrnorm"],
            "encoder": {"layers": flat["layers"]}, "post_layernorm": post}


def clip_apply(params: dict, cfg: CLIPConfig, images: jax.Array) -> jax.Array:
    """images (B, H, W, 3) normalised → `hidden_states[select_layer]` (B, 1 + grid², C), CLS first."""
    n = cfg.num_run_layers
    return CLIPVisionTower(cfg, n).apply({"params": _to_module_tree(params, n)}, images)


def clip_rules(cfg: CLIPConfig, root: str = "", prefix: str = "vision_model.") -> list[Rule]:
    """HF `CLIPVisionModel` keys under `prefix` ↔ the lvjax tree under `root` (all layers, stacked)."""
    n = cfg.num_hidden_layers
    layer = f"{prefix}encoder.layers.{{i}}."
    rules = [
        Rule(f"{prefix}embeddings.class_embedding", f"{root}embeddings/class_embedding"),
        Rule(f"{prefix}embeddings.patch_embedding.weight", f"{root}embeddings/patch_embedding/kernel", CONV2D),
        Rule(f"{prefix}embeddings.position_embedding.weight", f"{root}embeddings/position_embedding/embedding"),
    ]
    for norm in ("pre_layrnorm", "post_layernorm"):
        rules += [Rule(f"{prefix}{norm}.weight", f"{root}{norm}/scale"), Rule(f"{prefix}{norm}.bias", f"{root}{norm}/bias")]
    for norm in ("layer_norm1", "layer_norm2"):
        rules += [Rule(f"{layer}{norm}.weight", f"{root}encoder/layers/{norm}/scale", IDENTITY, n),
                  Rule(f"{layer}{norm}.bias", f"{root}encoder/layers/{norm}/bias", IDENTITY, n)]
    for lin in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"):
        path = f"{root}encoder/layers/{lin.replace('.', '/')}"
        rules += [Rule(f"{layer}{lin}.weight", f"{path}/kernel", LINEAR, n),
                  Rule(f"{layer}{lin}.bias", f"{path}/bias", IDENTITY, n)]
    return rules
