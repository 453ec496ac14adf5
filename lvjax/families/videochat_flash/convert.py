"""Conversion rules for the UMT vision tower and the ToMe16 MLP projector.

HF keys (prefixes as in the VideoChat-Flash checkpoints) ↔ lvjax paths under `root`:

    {prefix}patch_embed.proj.weight  (C,3,t,p,p)  ↔ {root}patch_embed/proj/kernel  (t,p,p,3,C)  CONV3D
    {prefix}patch_embed.proj.bias                 ↔ {root}patch_embed/proj/bias
    {prefix}blocks.{i}.norm1.weight / .bias       ↔ {root}blocks/norm1/scale / bias         stacked
    {prefix}blocks.{i}.attn.qkv.weight (3C, C)    ↔ {root}blocks/attn/qkv/kernel (N, C, 3C)  LINEAR
    {prefix}blocks.{i}.attn.q_bias / v_bias       ↔ {root}blocks/attn/q_bias / v_bias
    {prefix}blocks.{i}.attn.proj.weight / .bias   ↔ {root}blocks/attn/proj/kernel / bias
    {prefix}blocks.{i}.norm2.weight / .bias       ↔ {root}blocks/norm2/scale / bias
    {prefix}blocks.{i}.mlp.fc{1,2}.weight / .bias ↔ {root}blocks/mlp/fc{1,2}/kernel / bias
    {prefix}vision_layernorm.weight / .bias       ↔ {root}vision_layernorm/scale / bias
    model.mm_projector.mlp.{0,2}.weight / .bias   ↔ {root}mlp_0|mlp_2/kernel / bias          LINEAR
"""

from __future__ import annotations

from lvjax.convert.table import CONV3D, IDENTITY, LINEAR, Rule
from lvjax.models.umt import UMTConfig

VISION_PREFIX = "model.vision_tower.vision_tower.encoder."
PROJECTOR_PREFIX = "model.mm_projector."


def vision_rules(cfg: UMTConfig, root: str = "", prefix: str = VISION_PREFIX) -> list[Rule]:
    """Rules for the UMT ViT whose lvjax params sit under `root` ('' or e.g. 'vision/').

    Block weights are stacked over the cfg.num_blocks scanned blocks.
    """
    n = cfg.num_blocks
    blk = f"{prefix}blocks.{{i}}."
    rules = [
        Rule(f"{prefix}patch_embed.proj.weight", f"{root}patch_embed/proj/kernel", CONV3D),
        Rule(f"{prefix}patch_embed.proj.bias", f"{root}patch_embed/proj/bias"),
    ]
    for norm in ("norm1", "norm2"):
        rules.append(Rule(f"{blk}{norm}.weight", f"{root}blocks/{norm}/scale", IDENTITY, n))
        rules.append(Rule(f"{blk}{norm}.bias", f"{root}blocks/{norm}/bias", IDENTITY, n))
    rules.append(Rule(f"{blk}attn.qkv.weight", f"{root}blocks/attn/qkv/kernel", LINEAR, n))
    if cfg.qkv_bias:
        rules.append(Rule(f"{blk}attn.q_bias", f"{root}blocks/attn/q_bias", IDENTITY, n))
        rules.append(Rule(f"{blk}attn.v_bias", f"{root}blocks/attn/v_bias", IDENTITY, n))
    for lin in ("attn.proj", "mlp.fc1", "mlp.fc2"):
        path = lin.replace(".", "/")
        rules.append(Rule(f"{blk}{lin}.weight", f"{root}blocks/{path}/kernel", LINEAR, n))
        rules.append(Rule(f"{blk}{lin}.bias", f"{root}blocks/{path}/bias", IDENTITY, n))
    rules.append(Rule(f"{prefix}vision_layernorm.weight", f"{root}vision_layernorm/scale"))
    rules.append(Rule(f"{prefix}vision_layernorm.bias", f"{root}vision_layernorm/bias"))
    return rules


def projector_rules(root: str = "", prefix: str = PROJECTOR_PREFIX) -> list[Rule]:
    """Rules for the projector MLP (`mlp.0` → `mlp_0`, `mlp.2` → `mlp_2`) under `root`."""
    rules = []
    for i in (0, 2):
        rules.append(Rule(f"{prefix}mlp.{i}.weight", f"{root}mlp_{i}/kernel", LINEAR))
        rules.append(Rule(f"{prefix}mlp.{i}.bias", f"{root}mlp_{i}/bias"))
    return rules
