"""lvjax: JAX/Flax long-video vision-language models (VideoChat-Flash, XComp)."""

__version__ = "0.1.0"

from lvjax.api import convert_hf, enable_compilation_cache, export_hf, load  # noqa: E402
from lvjax.selection import QCCompConfig  # noqa: E402

__all__ = ["load", "convert_hf", "export_hf", "enable_compilation_cache", "QCCompConfig"]
