"""Model families: one package each, registered on import (see `base.py` for the protocol).

    qwen2             plain Qwen2 / Qwen2.5 LMs
    videochat_flash   VideoChat-Flash (HiCo) and XComp (LP-Comp, QC-Comp)
    video_xl          Video-XL (visual summarization tokens, beacon memory)
    video_xl_pro      Video-XL-Pro (ReCoT: DTS + query-aware selector)
    video_xl2         Video-XL-2 (chunk-sparse prefill, bi-level KV decoding)
"""

from lvjax.families import qwen2, video_xl, video_xl2, video_xl_pro, videochat_flash  # noqa: F401  (registers them)
from lvjax.families.base import Encoded, Family, Sampling, TrainingMedia
from lvjax.families.registry import family_by_name, family_for, names

__all__ = ["Encoded", "Family", "Sampling", "TrainingMedia", "family_by_name", "family_for", "names"]
