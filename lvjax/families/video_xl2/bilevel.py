"""Video-XL-2's bi-level KV decoding plan (eval/lvu/w_chunk_bilevel, `LlavaQwenForCausalLM.forward`).

After the sparse prefill, the cache of [0, visual_end) is rebuilt block by block: block 0 is
the prefix [0, visual_start); then blocks of `chunk_size` timestamp groups. Blocks
{0, 1, last} ∪ {u // (chunk_size / 2) + 1 for u in selected_unit_indices} keep their full KV
(indices past the last block select nothing); every other block keeps, per group, its
time-token KV and `avg_pool1d(kernel = stride = compression)` of its visual KV. An empty
`selected_unit_indices` keeps every block in full. The question suffix is then re-encoded on
this mixed cache at positions mixed_len, mixed_len + 1, …
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from lvjax.config import ConfigError
from lvjax.families.video_xl2.spans import VisualSpans


@dataclasses.dataclass(frozen=True)
class BilevelPlan:
    """pieces: (start, stop, pool) over the prefill cache, in order (see `KVCache.compact`);
    selected: the full-KV block indices (sorted); visual_end: where the re-encoded suffix starts."""

    pieces: tuple[tuple[int, int, int], ...]
    selected: tuple[int, ...]
    visual_end: int

    @property
    def mixed_len(self) -> int:
        return sum((stop - start) // pool for start, stop, pool in self.pieces)


def bilevel_plan(spans: VisualSpans, chunk_size: int, compression: int, unit_indices: Sequence[int]) -> BilevelPlan:
    """The plan for one prompt; `unit_indices` are the relevant units (chunk_size / 2 groups each)."""
    if chunk_size < 1 or compression < 1:
        raise ConfigError(f"selected_config: selected_chunk_size={chunk_size} and compression={compression} must be ≥ 1")
    groups = spans.groups
    blocks = [groups[i:i + chunk_size] for i in range(0, len(groups), chunk_size)]
    n_blocks = len(blocks) + 1  # block 0 is the prefix
    chosen = {int(u // (chunk_size / 2) + 1) for u in unit_indices}  # float division, as the original
    full = set(range(n_blocks)) if not chosen else {0, 1, n_blocks - 1} | (chosen & set(range(n_blocks)))
    pieces: list[tuple[int, int, int]] = [(0, spans.visual_start, 1)]
    for b, block in enumerate(blocks, start=1):
        if b in full:
            pieces.append((block[0].time_start, block[-1].end, 1))
        else:
            for g in block:
                pieces += [(g.time_start, g.time_end, 1), (g.time_end, g.end, compression)]
    merged: list[tuple[int, int, int]] = []
    for p in pieces:
        if merged and p[2] == 1 and merged[-1][2] == 1 and merged[-1][1] == p[0]:
            merged[-1] = (merged[-1][0], p[1], 1)
        elif p[1] > p[0]:
            merged.append(p)
    return BilevelPlan(tuple(merged), tuple(sorted(full)), spans.visual_end)
