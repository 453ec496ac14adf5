"""Vision side throughput: UMT ViT + ToMe + MLP projector, frames/s and achieved TFLOP/s.

Random weights, jitted exactly as the answering path runs it (`vision_features` in clips of
L frames, `clip_batch` clips at a time, then `merge_and_project`). Per config it prints the
first call (with compilation) and the warm best-of-N, frames/s, the analytic FLOPs per frame
(patch embedding, per block qkv/proj/MLP matmuls and the clip-wide QK/AV attention, ToMe's
bipartite similarity rounds, the projector) cross-checked with XLA's cost analysis, the
achieved TFLOP/s and — only with --peak-tflops — the model FLOP utilisation (MFU).

XLA's cost analysis counts a loop body once (the blocks are an nn.scan, clips a lax.map), so
the cross-check compiles the encode of one clip (no lax.map) and adds (blocks - 1) times the
count of one ViT block compiled alone.

Configs:
  tiny    224 px, patch 16, width 64, 2 blocks, 4 heads, L = 4, LLM width 64 (lvjax.testing.tiny)
  mid     224 px, patch 16, width 384, 11 blocks, 6 heads, L = 4, LLM width 512 (ViT-S-like)
  real    448 px, patch 16, width 1024, 23 blocks (UMT-L, select layer -2), 16 heads, L = 4,
          LLM width 1536: VideoChat-Flash-2B's vision side (for a GPU; slow on CPU)

    python tools/bench_vision.py --configs tiny,mid --frames 32
    python tools/bench_vision.py --configs real --frames 256 --peak-tflops 989 --dtype bfloat16  # H100 bf16 dense
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CONFIGS = {
    "tiny": dict(vision=dict(image_size=224, patch_size=16, hidden_size=64, num_hidden_layers=3, num_attention_heads=4),
                 llm_hidden=64),
    "mid": dict(vision=dict(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
                llm_hidden=512),
    "real": dict(vision=dict(image_size=448, patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
                 llm_hidden=1536),
}


def make_cfg(name: str, dtype: str, layers: int | None = None):
    from lvjax.config import LLMConfig
    from lvjax.families.videochat_flash.model import VideoChatFlashConfig
    from lvjax.models.umt import UMTConfig

    c = CONFIGS[name]
    v = dict(c["vision"], mlp_ratio=4.0, num_frames=4, ckpt_num_frame=4, tubelet_size=1, return_idx=-2,
             dtype=dtype, param_dtype="float32")
    if layers is not None:
        v["num_hidden_layers"] = layers
    d = c["llm_hidden"]
    llm = LLMConfig(vocab_size=256, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=1,
                    num_attention_heads=max(1, d // 64), num_key_value_heads=1, dtype=dtype)
    vision = UMTConfig(**v)
    return VideoChatFlashConfig(llm=llm, vision=vision, mm_hidden_size=vision.hidden_size)


def init(cfg, seed: int = 0) -> dict:
    """Random vision + projector params (the LLM is not needed here)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from lvjax.families.videochat_flash.model import _vision_modules

    vision, projector = _vision_modules(cfg)
    k1, k2 = jax.random.split(jax.random.key(seed))
    v = cfg.vision
    clip = jnp.zeros((1, v.num_frames, v.image_size, v.image_size, 3), jnp.float32)
    init_v = jax.jit(lambda k: vision.init(k, clip)["params"])
    init_p = jax.jit(lambda k: projector.init(k, jnp.zeros((1, 1, cfg.mm_hidden_size)))["params"])
    return nn.unbox({"vision": init_v(k1), "projector": init_p(k2)})


def flops_per_frame(cfg) -> dict:
    """Analytic FLOPs (2 per multiply-add) per frame, by part."""
    from lvjax.models.tome import merge_schedule

    v = cfg.vision
    L, C, g2 = v.num_frames, v.hidden_size, v.tokens_per_frame
    M = int(C * v.mlp_ratio)
    n = L * g2  # tokens per clip
    patch = 2 * g2 * v.patch_size ** 2 * 3 * v.tubelet_size * C / v.tubelet_size
    block = 2 * n * C * 3 * C + 2 * n * C * C + 2 * 2 * n * C * M + 2 * 2 * n * n * C
    target = cfg.tokens_per_frame * L
    tome, p = 0, n
    dh = C // v.num_attention_heads
    for r in merge_schedule(n, target):  # similarity of the two halves on the head-averaged metric
        tome += 2 * (p - p // 2) * (p // 2) * dh
        p -= r
    D = cfg.llm.hidden_size
    proj = 2 * target * (C * D + D * D)
    return dict(patch=patch, blocks=v.num_blocks * block / L, attention_part=v.num_blocks * 4 * n * n * C / L,
                tome=tome / L, projector=proj / L,
                total=patch + (v.num_blocks * block + tome + proj) / L)


@functools.partial(jax.jit, static_argnames=("cfg", "clip_batch"))
def encode(params, clips, *, cfg, clip_batch):
    from lvjax.families.videochat_flash import model as vcf

    return vcf.merge_and_project(params, cfg, vcf.vision_features(params, cfg, clips, clip_batch))


def _cost(compiled) -> float | None:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    return None if not ca or "flops" not in ca else float(ca["flops"])


def xla_flops_per_frame(name: str, dtype: str) -> float | None:
    """XLA's count for one clip, per frame: the whole encode (the block scan's body counted once)
    plus (num_blocks - 1) times one block compiled on its own."""
    import jax.numpy as jnp

    from lvjax.models.umt import Block

    cfg = make_cfg(name, dtype)
    v = cfg.vision
    params = jax.eval_shape(lambda: init(cfg))
    clips = jax.ShapeDtypeStruct((1, v.num_frames, v.image_size, v.image_size, 3), jnp.float32)
    whole = _cost(encode.lower(params, clips, cfg=cfg, clip_batch=8).compile())
    x = jax.ShapeDtypeStruct((1, v.num_frames * v.tokens_per_frame, v.hidden_size), jnp.float32)
    block = Block(v)
    bparams = jax.eval_shape(lambda: block.init(jax.random.key(0), jnp.zeros(x.shape))["params"])
    one = _cost(jax.jit(lambda p, x: block.apply({"params": p}, x)[0]).lower(bparams, x).compile())
    if whole is None or one is None:
        return None
    return (whole + (v.num_blocks - 1) * one) / v.num_frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--configs", default="tiny,mid", help=f"comma list of {sorted(CONFIGS)} (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=32, help="frames per call, a multiple of 4 (default: %(default)s)")
    ap.add_argument("--clip-batch", type=int, default=8, help="clips per ViT step (default: %(default)s, as answering)")
    ap.add_argument("--dtype", default="float32", help="compute dtype (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=2, help="warm runs; the best is shown (default: %(default)s)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="device peak TFLOP/s for MFU (default: none, MFU not printed)")
    ap.add_argument("--no-xla", action="store_true", help="skip the XLA cost-analysis cross-check")
    args = ap.parse_args(argv)

    import numpy as np

    if args.frames % 4:
        ap.error("--frames must be a multiple of the clip length 4")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {args.frames} frames per call, "
          f"clip_batch {args.clip_batch}, dtype {args.dtype}")
    hdr = (f"{'config':<7}{'px':>5}{'width':>6}{'blocks':>7}{'GFLOP/frame':>12}{'attn %':>7}{'XLA/analytic':>13}"
           f"{'first s':>9}{'warm s':>9}{'frames/s':>10}{'TFLOP/s':>9}")
    if args.peak_tflops:
        hdr += f"{'MFU':>8}"
    print(hdr)
    for name in [c for c in args.configs.split(",") if c]:
        cfg = make_cfg(name, args.dtype)
        v = cfg.vision
        fl = flops_per_frame(cfg)
        xf = None if args.no_xla else xla_flops_per_frame(name, args.dtype)
        params = init(cfg)
        rng = np.random.RandomState(0)
        clips = jax.numpy.asarray(rng.standard_normal((args.frames // 4, 4, v.image_size, v.image_size, 3)).astype(np.float32))
        t0 = time.perf_counter()
        encode(params, clips, cfg=cfg, clip_batch=args.clip_batch).block_until_ready()
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = encode(params, clips, cfg=cfg, clip_batch=args.clip_batch)
            out.block_until_ready()
            best = min(best, time.perf_counter() - t0)
        assert out.shape == (args.frames * 16, cfg.llm.hidden_size), out.shape
        fps = args.frames / best
        tflops = fl["total"] * fps / 1e12
        row = (f"{name:<7}{v.image_size:>5}{v.hidden_size:>6}{v.num_blocks:>7}{fl['total'] / 1e9:>12.2f}"
               f"{100 * fl['attention_part'] / fl['total']:>7.1f}")
        row += f"{xf / fl['total']:>13.3f}" if xf else f"{'-':>13}"
        row += f"{first:>9.2f}{best:>9.2f}{fps:>10.1f}{tflops:>9.3f}"
        if args.peak_tflops:
            row += f"{100 * tflops / args.peak_tflops:>7.1f}%"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
