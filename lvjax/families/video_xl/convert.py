"""Video-XL checkpoint ↔ lvjax params, the CLIP sub-folder, and the loader's vocabulary row.

HF keys (the released checkpoint's names):
    model.vision_tower.vision_tower.vision_model.*  ↔ vision/…       (lvjax.models.clip.clip_rules)
    model.mm_projector.{0,2}.{weight,bias}          ↔ projector/mlp_{0,2}/{kernel,bias}
    model.* / lm_head.weight (Qwen2)                ↔ llm/…          (lvjax.convert.llm.llm_rules)
    model.layers.{i}.self_attn.beacon_{q,k,v}_proj  ↔ llm/layers/self_attn/beacon_{q,k,v}_proj
    model.beacon_embed_tokens.weight (1, D)         ↔ llm/beacon_embed_tokens/embedding

The vocabulary row. The original loader calls `resize_token_embeddings(vocab_size + 1)`: one
random row (N(0, 0.02), not reproducible) is appended to `embed_tokens` and `lm_head`. Its id is
the visual placeholder: the embedding row is never looked up (placeholders are replaced by
visual tokens), the LM head row only gives logits column `vocab_size`. On import lvjax appends
a **zero** row to both, deterministically: that column's logit is then exactly 0 (the original's
random row gives a small logit of either sign; neither is ever near a trained model's top
logit). `set_resize_rows` puts other rows in (the tests use the recorded original's). Export
drops the row, so the original loader adds its own again.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from lvjax.config import _thaw_pairs
from lvjax.convert.files import save_safetensors
from lvjax.convert.llm import llm_rules
from lvjax.convert.table import IDENTITY, LINEAR, Rule, Transform
from lvjax.families.video_xl.config import CLIP_FOLDER, VideoXLConfig
from lvjax.models.clip import clip_rules

CLIP_PREFIX = "model.vision_tower.vision_tower."


def _zero_row(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a, np.zeros((1, a.shape[1]), a.dtype)])


# (V0, D) ↔ (V0 + 1, D) embedding; (V0, D) weight ↔ (D, V0 + 1) kernel.
ADD_ROW = Transform("add_row", _zero_row, lambda a: a[:-1])
LINEAR_ADD_ROW = Transform("linear_add_row", lambda a: _zero_row(a).T, lambda a: a.T[:-1])


def rules(cfg: VideoXLConfig) -> list[Rule]:
    grow = {"model.embed_tokens.weight": ADD_ROW, "lm_head.weight": LINEAR_ADD_ROW}
    out = [dataclasses.replace(r, transform=grow[r.hf]) if r.hf in grow else r for r in llm_rules(cfg.llm, root="llm/")]
    n = cfg.llm.num_hidden_layers
    for name in cfg.beacon_param:
        key, path = f"model.layers.{{i}}.self_attn.beacon_{name}_proj", f"llm/layers/self_attn/beacon_{name}_proj"
        out += [Rule(f"{key}.weight", f"{path}/kernel", LINEAR, n), Rule(f"{key}.bias", f"{path}/bias", IDENTITY, n)]
    out.append(Rule("model.beacon_embed_tokens.weight", "llm/beacon_embed_tokens/embedding"))
    for i in (0, 2):
        out += [Rule(f"model.mm_projector.{i}.weight", f"projector/mlp_{i}/kernel", LINEAR),
                Rule(f"model.mm_projector.{i}.bias", f"projector/mlp_{i}/bias")]
    out += clip_rules(cfg.clip, root="vision/", prefix=f"{CLIP_PREFIX}vision_model.")
    return out


def set_resize_rows(params: dict, embed_row: np.ndarray, lm_head_row: np.ndarray) -> dict:
    """params with the loader's added vocabulary row (id vocab_size − 1) set to the given (D,) rows."""
    llm = dict(params["llm"])
    emb = np.asarray(llm["embed_tokens"]["embedding"]).copy()
    head = np.asarray(llm["lm_head"]["kernel"]).copy()
    emb[-1], head[:, -1] = embed_row, lm_head_row
    llm["embed_tokens"] = {"embedding": emb}
    llm["lm_head"] = {"kernel": head}
    return {**params, "llm": llm}


def clip_folder_name(cfg: VideoXLConfig) -> str:
    """The exported CLIP sub-folder: `mm_vision_tower` when it is a relative path, else `vision_tower`."""
    tower = cfg.mm_vision_tower
    return tower if not os.path.isabs(tower) and ".." not in tower.split(os.sep) else CLIP_FOLDER


def write_clip_folder(out: str, cfg: VideoXLConfig, tensors: dict[str, np.ndarray]) -> None:
    """Write the CLIP folder the original loads (`CLIPVisionModel` keys, its config and preprocessor)."""
    folder = os.path.join(out, clip_folder_name(cfg))
    os.makedirs(folder, exist_ok=True)
    clip = {k[len(CLIP_PREFIX):]: v for k, v in tensors.items() if k.startswith(CLIP_PREFIX)}
    save_safetensors(clip, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    for name, data in (("config.json", cfg.clip_hf), ("preprocessor_config.json", cfg.preprocessor_hf)):
        if data:
            with open(os.path.join(folder, name), "w") as f:
                json.dump(_thaw_pairs(data), f, indent=2)
