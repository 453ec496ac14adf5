"""Video-XL-2 prefill at real Qwen2.5-7B shapes: dense vs chunk-sparse vs chunk-sparse + bi-level.

Analytic only (no weights): per frame count, the prompt layout of the release (14 prefix tokens,
per group of 4 frames 10 time tokens + 144 visual tokens, a 61-token question), the allowed
attention entries, the kernel blocks the chunk-sparse `Layout` visits (tiles of 128 and 512), the
prefill FLOPs (linear layers + attention over the allowed entries) and, for bi-level, the
decoding KV length. Ratios are against dense in the same run.

    python tools/bench_videoxl2.py [--frames 1024 4096] [--block 4] [--prev 3]
"""

from __future__ import annotations

import argparse

from lvjax.families.video_xl2.bilevel import bilevel_plan
from lvjax.families.video_xl2.spans import Group, VisualSpans
from lvjax.families.video_xl2.sparse import chunk_layout, chunks, visited_fraction

HIDDEN, LAYERS, INTER, HEADS, KV_HEADS, HEAD_DIM = 3584, 28, 18944, 28, 4, 128
PREFIX, TIME, VISUAL, SUFFIX = 14, 10, 144, 61


def spans_for(frames: int) -> VisualSpans:
    groups, pos = [], PREFIX
    for _ in range(-(-frames // 4)):
        groups.append(Group(pos, pos + TIME, pos + TIME + VISUAL))
        pos += TIME + VISUAL
    return VisualSpans(PREFIX, pos, pos + SUFFIX, tuple(groups), frames)


def allowed_entries(spans: VisualSpans, block: int, prev: int) -> int:
    """Allowed (i, j) of the chunk-sparse mask, counted per row range (never an L×L array)."""
    n, vs, ve = spans.total_len, spans.visual_start, spans.visual_end
    time_starts = [g.time_start for g in spans.groups]
    total = vs * (vs + 1) // 2 + sum(ve + i + 1 for i in range(n - ve))  # prefix rows, suffix rows
    for g in spans.groups:
        total += sum(t + 1 for t in range(g.time_start, g.time_end))  # time rows see everything before
    for start, end, lookback in chunks(spans, block, prev):
        for g in (g for g in spans.groups if start <= g.time_start < end):
            for i in range(g.time_end, g.end):
                earlier_time = sum(TIME for s in time_starts if s < lookback)
                total += vs + earlier_time + (i - lookback + 1)
    return total


def flops(n: int, entries: int) -> float:
    linear = 2 * n * LAYERS * (HIDDEN * (HEADS + 2 * KV_HEADS) * HEAD_DIM + HEADS * HEAD_DIM * HIDDEN + 3 * HIDDEN * INTER)
    return linear + LAYERS * 4 * entries * HEADS * HEAD_DIM


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--prev", type=int, default=3)
    ap.add_argument("--units", type=int, default=8, help="selected units for bi-level (selected_topk of the release)")
    args = ap.parse_args(argv)
    for f in args.frames:
        spans = spans_for(f)
        n = spans.total_len
        dense, sparse = n * (n + 1) // 2, allowed_entries(spans, args.block, args.prev)
        layout = chunk_layout(spans, args.block, args.prev)
        plan = bilevel_plan(spans, 4, 4, range(0, 2 * args.units, 2))
        print(f"{f} frames, L={n}: allowed/causal {sparse / dense:.4f}; visited blocks "
              f"128: {visited_fraction(layout, 128):.4f}, 512: {visited_fraction(layout, 512):.4f}; "
              f"prefill TFLOPs dense {flops(n, dense) / 1e12:.1f}, chunk-sparse {flops(n, sparse) / 1e12:.1f} "
              f"(x{flops(n, dense) / flops(n, sparse):.2f}), attention-only x{dense / sparse:.2f}; "
              f"bi-level KV {plan.mixed_len}/{spans.visual_end} ({plan.mixed_len / spans.visual_end:.3f}) "
              f"with {args.units} units")


if __name__ == "__main__":
    main()
