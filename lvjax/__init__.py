"""lvjax: JAX/Flax long-video vision-language models (VideoChat-Flash, XComp, the Video-XL family)."""

__version__ = "0.1.0"

from lvjax.api import convert_hf, enable_compilation_cache, export_hf, load  # noqa: E402
from lvjax.families.videochat_flash import QCCompConfig  # noqa: E402  (the `qc=` option of answer)

__all__ = ["load", "convert_hf", "export_hf", "enable_compilation_cache", "QCCompConfig"]
