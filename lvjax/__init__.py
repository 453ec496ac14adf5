"""lvjax: JAX/Flax long-video vision-language models (VideoChat-Flash, XComp)."""

__version__ = "0.1.0"
