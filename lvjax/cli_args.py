"""Shared pieces of the `lvjax` sub-commands: the exit-code convention and argparse value types."""

from __future__ import annotations

import argparse

EXIT_CODES = ("exit status: 0 success; 1 a bad file, folder, config, checkpoint or video (one line on stderr); "
              "2 bad usage (an option's value, a question); 130 / 143 interrupted (Ctrl-C / SIGTERM), "
              "nothing half-written left behind")
MESH_HELP = ("device mesh over axes data, fsdp, tensor, sequence, e.g. data=2,tensor=4, or tensor=2,sequence=4 "
             "(sequence splits the LLM prefill over devices; docs/scale.md); default: one device")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded(text, int, 1, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded(text, int, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _bounded(text, float, None, "a positive number")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _bounded(text: str, kind, low, what):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value
