"""Block-sparse attention: layouts, host block metadata, Pallas TPU/GPU kernels and a blockwise
XLA implementation (fwd + bwd)."""

from .api import block_sparse_attention
from .block_info import BlockInfo, block_info, brute_force_kinds
from .blockwise import blockwise_attention
from .layout import (
    Layout,
    Segment,
    causal,
    chunk_sparse,
    full,
    mask_fn,
    packed,
    padding,
    qc_windows,
    segmented,
)
from .reference import reference_attention, reference_from_layout

__all__ = [
    "BlockInfo", "Layout", "Segment", "block_info", "block_sparse_attention", "blockwise_attention",
    "brute_force_kinds", "causal", "chunk_sparse", "full", "mask_fn", "packed", "padding", "qc_windows",
    "reference_attention", "reference_from_layout", "segmented",
]
