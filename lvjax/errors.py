"""The errors lvjax raises for a user's mistake; each message names the file, key or value.

    LvjaxError                 base; `exit_code` is what the CLI exits with (one line on stderr)
    ├── ConfigError            config.json / generation_config.json / train config: a value of the wrong type or range
    ├── CheckpointError        weights: safetensors header, index, keys, shapes, dtypes, checksums, orbax folder
    │                          (the class `lvjax.convert.table.ConversionError`, its name)
    ├── MediaError             a video, image folder, image or frame array (the class `lvjax.video.VideoError`)
    └── UsageError             an option or argument value (exit 2, as argparse), a question the model cannot take

All subclass ValueError too, so code written against the older names keeps catching them.
"""

from __future__ import annotations


class LvjaxError(ValueError):
    """A user-facing problem (bad input, not a bug); the message names the file, key or value."""

    exit_code = 1


class ConfigError(LvjaxError):
    """A configuration value is missing, of the wrong type or out of range."""


class ConversionError(LvjaxError):
    """A checkpoint (safetensors, index, orbax folder, lvjax.json) is malformed or does not fit the model."""


class VideoError(LvjaxError):
    """A video (file, folder or array) or an image cannot be read."""


class UsageError(LvjaxError):
    """An option, argument or question is invalid for this call (exit status 2, as argparse)."""

    exit_code = 2


# The hierarchy's names; the classes keep the names they had (in records and reprs) before it existed.
CheckpointError = ConversionError
MediaError = VideoError
