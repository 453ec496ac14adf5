"""Model families: one package each, registered on import (see `base.py` for the protocol).

    qwen2             plain Qwen2 / Qwen2.5 LMs
    videochat_flash   VideoChat-Flash (HiCo) and XComp (LP-Comp, QC-Comp)
"""

from lvjax.families import qwen2, videochat_flash  # noqa: F401  (registers the families)
from lvjax.families.base import Encoded, Family, Sampling
from lvjax.families.registry import family_by_name, family_for, names

__all__ = ["Encoded", "Family", "Sampling", "family_by_name", "family_for", "names"]
