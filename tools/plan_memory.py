#!/usr/bin/env python
"""Plan per-device memory of a training config: params, grads, optimizer state, activations.

    python tools/plan_memory.py --config configs/xcomp_2b.yaml --frames 1024 --mesh 1,8,1,1
    python tools/plan_memory.py --config configs/xcomp_2b.yaml --frames 128,512,1024 --remat full,dots

Sizes come from the config (model.hf_config, or config.json of model.init; when neither is
readable, the known VideoChat-Flash-2B sizes of reference §1.1). Analytic estimate, no devices
needed; it counts what XLA must hold at the backward peak, not allocator slack:
  params (param_dtype), grads + accumulators (fp32, trainable only), AdamW moments (2 × fp32,
  trainable only): divided by fsdp × tensor for LLM matrices, by fsdp for the vision side's (the
  default rules), replicated vectors;
  activations of one micro-batch: per LLM layer the remat-saved tensors at that layer's length
  (LP-Comp shrinks it), plus the recompute peak of one layer (dense attention scores unless
  --flash), the logits of the text tokens (fp32, + grad), and the frozen ViT's forward of its share
  of one clip batch (clips split over every mesh axis).

--inference plans `lvjax.load(path, mesh=...)` answering one video instead (no config needed):

    python tools/plan_memory.py --inference --frames 1024,4096 --mesh data=2,tensor=4 --attention blockwise
    python tools/plan_memory.py --inference --model PATH/config.json --compression none --dtype float32

  params per device (LLM matrices / (fsdp × tensor), vision-side ones / fsdp, vectors replicated, in
  --dtype); the KV caches of
  every layer at its own length (LP-Comp shrinks it) + the new tokens, batch over data × fsdp and
  KV heads over tensor; the prefill activation peak of the longest layer (dense: Hq·S² fp32 scores
  and their exponentials; blockwise: one 512-key block per query row) plus its MLP; the ViT on this
  device's share of one 8-clip batch (clips split over every mesh axis). Without --model: the
  VideoChat-Flash-2B sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lvjax.families.videochat_flash.compression import build_plan  # noqa: E402
from lvjax.sharding import AXES, parse_mesh  # noqa: E402
from lvjax.train.config import load_config  # noqa: E402

GiB = 1024**3
REAL_2B = {  # reference §1.1 (VideoChat-Flash-Qwen2_5-2B_res448); UMT-L vision
    "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
    "num_attention_heads": 12, "num_key_value_heads": 2, "tie_word_embeddings": True, "mm_hidden_size": 1024,
    "vision_tower_config": {"image_size": 448, "patch_size": 16, "hidden_size": 1024, "num_hidden_layers": 24,
                            "num_attention_heads": 16, "mlp_ratio": 4.0, "return_idx": -2},
}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def lp_comp_tokens(num_layers: int) -> list[int]:
    """Visual tokens per frame each layer sees under xcomp_cosine: the plan the model runs."""
    return list(build_plan("xcomp_cosine", num_layers).group_tokens)


def sizes_from_config(cfg) -> dict:
    hf = None
    if cfg.model.hf_config:
        hf = dict(cfg.model.hf_config)
    elif cfg.model.init and os.path.isfile(os.path.join(cfg.model.init, "config.json")):
        with open(os.path.join(cfg.model.init, "config.json")) as f:
            hf = json.load(f)
    elif cfg.model.init and os.path.isfile(os.path.join(cfg.model.init, "lvjax.json")):
        with open(os.path.join(cfg.model.init, "lvjax.json")) as f:
            hf = json.load(f)["hf_config"]
    if hf is None:
        hf = dict(REAL_2B)
    hf.update(cfg.model.hf_overrides or {})
    return hf


def count_params(hf: dict, family: str) -> dict:
    """Parameter counts: {'llm': (matrix, vector), 'vision': ..., 'projector': ...}."""
    d, i, l = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    hq, hkv = hf["num_attention_heads"], hf.get("num_key_value_heads", hf["num_attention_heads"])
    hd = hf.get("head_dim") or d // hq
    v = hf["vocab_size"]
    mat = v * d * (1 if hf.get("tie_word_embeddings") else 2) + l * (2 * d * hq * hd + 2 * d * hkv * hd + 3 * d * i)
    vec = l * (hq * hd + 2 * hkv * hd + 2 * d) + d
    out = {"llm": (mat, vec)}
    if family == "videochat_flash":
        vt = {**REAL_2B["vision_tower_config"], **(hf.get("vision_tower_config") or {})}
        c, p = vt["hidden_size"], vt["patch_size"]
        blocks = vt["num_hidden_layers"] + vt.get("return_idx", -2) + 1
        mlp = int(c * vt["mlp_ratio"])
        out["vision"] = (3 * p * p * c + blocks * (4 * c * c + 2 * c * mlp), blocks * (3 * c + c + mlp + c + 4 * c) + c)
        mm = hf.get("mm_hidden_size", c)
        out["projector"] = (mm * d + d * d, 2 * d)
    return out


def matrix_shards(name: str, fsdp: int, tensor: int) -> int:
    """Devices one matrix of `count_params` group `name` is split over (default rules: the vision side
    is not tensor-parallel)."""
    return fsdp * tensor if name == "llm" else fsdp


def plan(cfg, frames: int, mesh: tuple[int, int, int, int], remat: str, flash: bool) -> dict:
    hf = sizes_from_config(cfg)
    fam = cfg.model.family
    counts = count_params(hf, fam)
    data, fsdp, tensor, seq = mesh
    pb, cb = BYTES[cfg.model.param_dtype], BYTES[cfg.model.dtype]
    frozen = set()
    for pat in cfg.model.frozen:
        frozen.add(pat.split("/")[0])
    params = trainable = 0.0
    for name, (mat, vec) in counts.items():
        per_dev = mat / matrix_shards(name, fsdp, tensor) + vec
        params += per_dev * pb
        if name not in frozen and not (fam == "qwen2" and cfg.model.frozen):
            trainable += per_dev
    accum = cfg.train.grad_accum
    grads = trainable * 4 * (2 if accum > 1 else 1)
    adam = trainable * 4 * 2
    # activations of one micro-batch on one device
    rows = cfg.train.global_batch // accum
    if rows % (data * fsdp):
        raise SystemExit(f"micro-batch of {rows} rows does not split over data×fsdp = {data * fsdp}")
    b = rows // (data * fsdp)
    d, i, l = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    hq, hkv = hf["num_attention_heads"], hf.get("num_key_value_heads", hf["num_attention_heads"])
    hd = hf.get("head_dim") or d // hq
    s_text = cfg.data.max_seq_len
    per_frame = lp_comp_tokens(l) if cfg.model.compression == "xcomp_cosine" else [16] * l
    if fam == "qwen2":
        per_frame = [0] * l
    lengths = [s_text + frames * n for n in per_frame]
    saved_per_token = {
        "full": d * cb,
        "dots": (d + (hq * hd + 2 * hkv * hd) + d + 2 * i + d) * cb / tensor + d * cb,
        "minimal": (d + (hq * hd + 2 * hkv * hd) + d + 3 * i + 4 * d) * cb / tensor + d * cb,
        "none": (d + (hq * hd + 2 * hkv * hd) + d + 3 * i + 4 * d) * cb / tensor + d * cb,
    }[remat]
    saved = sum(b * (s / seq) * saved_per_token for s in lengths)
    if remat in ("minimal", "none") and not flash:
        saved += sum(b * (hq / tensor) * (s / seq) * s * 4 for s in lengths)  # attention probs kept
    s_max = max(lengths)
    attn_peak = b * (hq / tensor) * (s_max / seq) * (s_max if not flash else 1) * 4 * 2
    mlp_peak = b * (s_max / seq) * (i / tensor) * cb * 3 + b * (s_max / seq) * d * cb * 6
    logits = b * s_text * hf["vocab_size"] / tensor * 4 * 2
    vision = 0.0
    if fam == "videochat_flash":
        vt = {**REAL_2B["vision_tower_config"], **(hf.get("vision_tower_config") or {})}
        c = vt["hidden_size"]
        tokens = cfg.data.local_num_frames * (vt["image_size"] // vt["patch_size"]) ** 2
        clip_batch = math.ceil(min(8, rows * max(frames // cfg.data.local_num_frames, 1)) / (data * fsdp * tensor * seq))
        vision = clip_batch * tokens * (c * 6 + int(c * vt["mlp_ratio"])) * cb
        vision += clip_batch * vt["num_attention_heads"] * tokens * (tokens if not flash else 1) * 4
        vision += b * frames * 16 * d * cb  # the projected visual tokens
    act = saved + attn_peak + mlp_peak + logits + vision
    total = params + grads + adam + act
    return {"frames": frames, "remat": remat, "mesh": mesh, "rows_per_device": b, "seq_max": s_max,
            "params": params, "grads": grads, "adam": adam, "act_saved": saved, "act_layer_peak": attn_peak + mlp_peak,
            "logits": logits, "vision": vision, "total": total}


def plan_inference(hf: dict, family: str, frames: int, compression: str, mesh: dict, dtype: str, attention: str,
                   batch: int = 1, text: int = 256, new_tokens: int = 512, block: int = 512) -> dict:
    """Per-device bytes of answering: params, KV caches, prefill activation peak, ViT (see the module doc)."""
    data, fsdp, tensor = mesh.get("data", 1), mesh.get("fsdp", 1), mesh.get("tensor", 1)
    devices = data * fsdp * tensor * mesh.get("sequence", 1)
    cb = BYTES[dtype]
    counts = count_params(hf, family)
    params = sum((mat / matrix_shards(name, fsdp, tensor) + vec) * cb for name, (mat, vec) in counts.items())
    d, i, l = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    hq, hkv = hf["num_attention_heads"], hf.get("num_key_value_heads", hf["num_attention_heads"])
    hd = hf.get("head_dim") or d // hq
    b = math.ceil(batch / (data * fsdp))
    per_frame = lp_comp_tokens(l) if compression == "xcomp_cosine" else [16] * l
    lengths = [text + frames * n for n in per_frame]
    kv = sum(2 * b * math.ceil(hkv / tensor) * (s + new_tokens) * hd * cb for s in lengths)
    s_max = max(lengths)
    keys = s_max if attention == "dense" else min(block, s_max)
    attn = b * math.ceil(hq / tensor) * s_max * keys * 4 * 2
    mlp = b * s_max * (i / tensor) * cb * 3 + b * s_max * d * cb * 6
    vision = 0.0
    if family == "videochat_flash":
        vt = {**REAL_2B["vision_tower_config"], **(hf.get("vision_tower_config") or {})}
        c, clip = vt["hidden_size"], hf.get("mm_local_num_frames", 4)
        tokens = clip * (vt["image_size"] // vt["patch_size"]) ** 2
        clip_batch = math.ceil(min(8, math.ceil(frames / clip)) / devices)
        vision = clip_batch * tokens * (c * 6 + int(c * vt["mlp_ratio"])) * cb
        vision += clip_batch * vt["num_attention_heads"] * tokens * tokens * 4
    act = attn + mlp + b * hf["vocab_size"] / tensor * 4
    return {"frames": frames, "seq_max": s_max, "params": params, "kv_cache": kv, "prefill_peak": act,
            "vision": vision, "total": params + kv + max(act, vision)}


def main_inference(a) -> int:
    hf = dict(REAL_2B)
    if a.model:
        with open(a.model) as f:
            hf = json.load(f)
    family = "videochat_flash" if "vision_tower_config" in hf or "mm_hidden_size" in hf else "qwen2"
    mesh = dict(zip(AXES, parse_mesh(a.mesh or "")))
    frames = [int(x) for x in (a.frames or "1024").split(",")]
    rows = [plan_inference(hf, family, f, a.compression, mesh, a.dtype, a.attention) for f in frames]
    title = (f"inference, {family}, mesh {a.mesh or 'one device'}, {a.dtype}, {a.attention} attention, compression "
             f"{a.compression}, GiB per device (total = params + KV + the larger of prefill and ViT peaks)")
    return _print(rows, title, (("frames", "frames", 7), ("seq_max", "seq", 7)), ["params", "kv_cache", "prefill_peak", "vision", "total"],
                  13, a)


def _print(rows: list[dict], title: str, lead: tuple, cols: list[str], width: int, a) -> int:
    """JSON lines (--json), or a table: `title`, then per row the `lead` fields (key, label, width) and
    the `cols` in GiB, flagging totals over --hbm-gib."""
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(title)
    print(" ".join(f"{label:>{w}}" for _, label, w in lead) + " "
          + " ".join(f"{c:>{width}}" for c in cols))
    for r in rows:
        flag = "  (does not fit)" if a.hbm_gib and r["total"] / GiB > a.hbm_gib else ""
        print(" ".join(f"{r[k]:>{w}}" for k, _, w in lead) + " "
              + " ".join(f"{r[c] / GiB:>{width}.2f}" for c in cols) + flag)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", help="training YAML (configs/*.yaml); required unless --inference")
    p.add_argument("--inference", action="store_true", help="plan answering instead of training (see above)")
    p.add_argument("--model", help="--inference: a config.json (default: VideoChat-Flash-2B sizes)")
    p.add_argument("--compression", default="xcomp_cosine", help="--inference: in-LLM plan (default: %(default)s)")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(BYTES), help="--inference: dtype (default: %(default)s)")
    p.add_argument("--attention", default="blockwise", choices=("dense", "blockwise"),
                   help="--inference: prefill attention (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--frames", default=None, help="frame counts, comma-separated (default: data.max_frames)")
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor,sequence sizes (default: the config's, -1 → --devices);"
                   " --inference: data=2,tensor=4")
    p.add_argument("--devices", type=int, default=8, help="device count used to fill -1 in the mesh (default 8)")
    p.add_argument("--remat", default=None, help="remat policies to compare, comma-separated (default: the config's)")
    p.add_argument("--flash", action="store_true", help="assume a flash/block-sparse attention kernel (no S×S scores)")
    p.add_argument("--hbm-gib", type=float, default=None, help="device memory, to flag plans that do not fit")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    a = p.parse_args(argv)
    if a.inference:
        return main_inference(a)
    if not a.config:
        p.error("--config is required (or --inference)")
    cfg = load_config(a.config, a.overrides)
    sizes = [int(x) for x in a.mesh.split(",")] if a.mesh else [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor,
                                                                 cfg.mesh.sequence]
    sizes += [1] * (4 - len(sizes))
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = a.devices // known
    frames = [int(x) for x in a.frames.split(",")] if a.frames else [cfg.data.max_frames]
    remats = a.remat.split(",") if a.remat else [cfg.model.remat_policy]
    rows = [plan(cfg, f, tuple(sizes), r, a.flash) for f in frames for r in remats]
    title = (f"{cfg.source}: mesh data×fsdp×tensor×sequence = {'×'.join(map(str, sizes))}, "
             f"{'flash' if a.flash else 'dense'} attention, GiB per device")
    cols = ["params", "grads", "adam", "act_saved", "act_layer_peak", "logits", "vision", "total"]
    return _print(rows, title, (("frames", "frames", 7), ("remat", "remat", 8), ("seq_max", "seq", 7)), cols, 14, a)


if __name__ == "__main__":
    sys.exit(main())
