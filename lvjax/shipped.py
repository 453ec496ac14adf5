"""The models shipped in the package (`lvjax.load("tiny")`): names → folders under `lvjax/assets/`.

A leaf module, so `lvjax.load` resolves the names without importing how they are made
(`lvjax.tiny_model`).
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
NAMES = {"tiny": "tiny", "tiny-base": "tiny-base"}  # model names → folders under ASSETS


def resolve(path: str) -> str:
    """A shipped model's folder for its name ("tiny", "tiny-base"); any other path unchanged."""
    if path in NAMES and not os.path.exists(path):
        return str(ASSETS / NAMES[path])
    return path
