"""Video-XL-2's chunk-based sparse prefill (eval/lvu/w_chunk*, `get_sparse_attention_mask`).

The visual block is cut into chunks of `block_size` timestamp groups; the number of chunks is
ceil(F / (4·block_size)) with F the *unpadded* frame count (chunk b ends where group
(b+1)·block_size starts, the last one at the visual end). Query i may see key j ≤ i when

    i, j in the same chunk                         | j in chunks b−prev … b−1 (from the visual
    i in chunk b, j in [start of chunk b−prev, …)  |   start while fewer exist)
    j in the prefix  |  i in the suffix  |  i or j a time token

The original adds 0 / −1e9; every row keeps its diagonal, so no row is fully masked and the
additive mask is the same function as a boolean mask (exp(−1e9 + …) is 0 in float32).

The same rule as a block-sparse `Layout` (one segment per prefix / time text / group's visual
tokens / suffix, the time texts gathered after the visual tokens) is what the kernels visit on
GPU/TPU: `chunk_layout`; `attend` puts q/k/v into its order and the output back.
"""

from __future__ import annotations

import numpy as np

from kernels_pallas.block_sparse.block_info import block_info
from kernels_pallas.block_sparse.layout import Layout, Segment, causal, gather_globals
from lvjax.config import ConfigError
from lvjax.families.video_xl2.spans import VisualSpans


def chunks(spans: VisualSpans, block_size: int, prev_blocks: int) -> list[tuple[int, int, int]]:
    """(start, end, lookback start) of every prefill chunk, as the original's loop builds them."""
    if block_size < 1:
        raise ConfigError(f"block_size_chosed must be ≥ 1, got {block_size}")
    if prev_blocks < 1:  # the original indexes record_block_start[-0] (an IndexError) for 0
        raise ConfigError(f"prev_blocks_num must be ≥ 1, got {prev_blocks}")
    n_chunks = -(-spans.frames // (4 * block_size))
    starts = spans.time_token_starts
    out, start = [], spans.visual_start
    for b in range(n_chunks):
        nxt = (b + 1) * block_size
        end = spans.visual_end if nxt >= len(starts) else starts[nxt]
        lookback = out[-prev_blocks][0] if len(out) >= prev_blocks else spans.visual_start
        out.append((start, end, lookback))
        start = end
    if start != spans.visual_end:
        raise ConfigError(f"{spans.frames} frames give {n_chunks} chunks of {block_size} groups, which do not cover "
                          f"the {len(starts)} timestamp groups")
    return out


def chunk_mask(spans: VisualSpans, block_size: int, prev_blocks: int) -> np.ndarray:
    """(L, L) bool allowed mask of the sparse prefill, token by token (the original's rule)."""
    n, vs, ve = spans.total_len, spans.visual_start, spans.visual_end
    mask = np.zeros((n, n), bool)
    for start, end, lookback in chunks(spans, block_size, prev_blocks):
        mask[start:end, lookback:end] = True
    mask[:, :vs] = True
    mask[ve:, :] = True
    t = spans.time_tokens()
    mask[t, :] = True
    mask[:, t] = True
    return mask & np.tri(n, dtype=bool)


def chunk_layout(spans: VisualSpans, block_size: int, prev_blocks: int, gather: bool = True) -> Layout:
    """The sparse prefill as a `Layout`: the prefix and every time text are global segments that
    see everything before them; a group's visual tokens see (causally) everything from its chunk's
    lookback start; the suffix sees everything.

    gather: the time texts are moved into one run after the visual tokens (`gather_globals`: a
    permuted layout, same mask by position). In place, a time text every 154 tokens puts global keys
    and dense query rows into nearly every kernel block (~99 % visited); gathered, the visited
    blocks follow the true sparsity. With at most prev_blocks + 1 chunks the rule hides nothing:
    the layout is then plain `causal`."""
    bounds = chunks(spans, block_size, prev_blocks)
    if len(bounds) <= prev_blocks + 1:
        return causal(spans.total_len)
    segs = [Segment(spans.visual_start, lo=0, is_global=True)]
    first_seg: dict[int, int] = {}  # token offset of a chunk start → its first segment index
    chunk = 0
    for g in spans.groups:
        while g.time_start >= bounds[chunk][1]:
            chunk += 1
        first_seg.setdefault(g.time_start, len(segs))
        segs.append(Segment(g.time_end - g.time_start, lo=0, is_global=True))
        segs.append(Segment(g.end - g.time_end, lo=first_seg[bounds[chunk][2]]))
    segs.append(Segment(spans.suffix_len, lo=0))
    layout = Layout(tuple(segs))
    return gather_globals(layout, range(1, len(segs) - 1, 2), len(segs) - 1) if gather else layout


def attention_ratio(mask: np.ndarray) -> float:
    """Allowed entries over the causal ones (what the original prints)."""
    n = mask.shape[0]
    return float(mask.sum()) / (n * (n + 1) // 2)


def visited_fraction(layout: Layout, block: int) -> float:
    """Blocks the kernel visits over those of the causal layout of the same length (the lower triangle),
    at `block`×`block` tiles (a permuted layout visits blocks above the diagonal too: it may exceed 1)."""
    n = layout.length
    info = block_info(layout, block, block, q_len=-(-n // block) * block, q_start=0)  # the kernels' cache key
    nb = info.kind.shape[0]
    return info.num_visited / (nb * (nb + 1) // 2)
