"""Video-XL-2's answer modes (the three eval/lvu trees) as one options object.

    pure             prefill='dense',        decode='dense'
    w_chunk          prefill='chunk_sparse', decode='dense'
    w_chunk_bilevel  prefill='chunk_sparse', decode='bilevel'

Defaults follow the released MLVU / VideoMME scripts (w_chunk, w_chunk_bilevel):
block_size_chosed=4 groups (16 frames), prev_blocks_num=3, selected_config
{'selected_chunk_size': 4, 'compression': 4} (the selected_infos files). The release reads
`selected_unit_indices` from precomputed per-question files (an external relevance oracle);
where a question has none, the original bi-level forward falls back to the plain dense model
(dense prefill and dense decoding) — `resolve` does the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from kernels_pallas.block_sparse.layout import Layout, causal
from lvjax.config import ConfigError
from lvjax.families.video_xl2.bilevel import BilevelPlan, bilevel_plan
from lvjax.families.video_xl2.spans import VisualSpans
from lvjax.families.video_xl2.sparse import chunk_layout

PREFILLS = ("dense", "chunk_sparse")
DECODES = ("dense", "bilevel")


@dataclasses.dataclass(frozen=True)
class Mode:
    prefill: str = "chunk_sparse"
    decode: str = "dense"
    block_size_chosed: int = 4
    prev_blocks_num: int = 3
    selected_chunk_size: int = 4
    compression: int = 4
    selected_unit_indices: tuple[int, ...] | None = None


OPTIONS = frozenset(("prefill", "decode", "block_size_chosed", "prev_blocks_num", "selected_config",
                     "selected_unit_indices"))


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"video_xl2: {name} must be a positive integer, got {value!r}")
    return value


def resolve(prefill: str = "chunk_sparse", decode: str = "dense", block_size_chosed: int = 4, prev_blocks_num: int = 3,
            selected_config: dict | None = None, selected_unit_indices: Sequence[int] | None = None) -> Mode:
    """Validated answer options → `Mode` (bi-level without indices → the dense model, as the original)."""
    if prefill not in PREFILLS:
        raise ConfigError(f"video_xl2: prefill={prefill!r}, expected one of {PREFILLS}")
    if decode not in DECODES:
        raise ConfigError(f"video_xl2: decode={decode!r}, expected one of {DECODES}")
    sel = {"selected_chunk_size": 4, "compression": 4, **(selected_config or {})}
    unknown = set(sel) - {"selected_chunk_size", "compression", "selected_topk", "relevance oracle"}
    if unknown:
        raise ConfigError(f"video_xl2: selected_config has unknown key(s) {sorted(unknown)}")
    units = None
    if selected_unit_indices is not None:
        units = tuple(int(u) for u in selected_unit_indices)
        if any(u < 0 for u in units):
            raise ConfigError(f"video_xl2: selected_unit_indices must be ≥ 0, got {list(units)}")
    if decode == "bilevel" and units is None:
        prefill, decode = "dense", "dense"
    return Mode(prefill, decode, _int("block_size_chosed", block_size_chosed), _int("prev_blocks_num", prev_blocks_num),
                _int("selected_chunk_size", sel["selected_chunk_size"]), _int("compression", sel["compression"]), units)


def layout_and_plan(spans: VisualSpans, mode: Mode) -> tuple[Layout, BilevelPlan | None]:
    """The static prefill layout (causal or chunk-sparse) and the bi-level plan (None: dense decoding)."""
    if mode.prefill == "dense":
        layout = causal(spans.total_len)
    else:
        layout = chunk_layout(spans, mode.block_size_chosed, mode.prev_blocks_num)
    plan = None
    if mode.decode == "bilevel":
        plan = bilevel_plan(spans, mode.selected_chunk_size, mode.compression, mode.selected_unit_indices)
    return layout, plan
