"""Shared test fixtures: the recorded VideoChat-Flash reference (from ../shared or tests/fixtures)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parents[1]
SHARED_REF = ROOT.parent / "shared" / "fixtures" / "videochat_flash_original"
LOCAL_REF = ROOT / "tests" / "fixtures" / "videochat_flash_original"


def _ref_dir() -> Path | None:
    for d in (SHARED_REF, LOCAL_REF):
        if (d / "tiny_videochat_flash" / "config.json").is_file():
            return d
    return None


@pytest.fixture(scope="session")
def tiny_vcf_dir() -> Path:
    """The tiny original-format VideoChat-Flash folder (skips when neither copy is present)."""
    d = _ref_dir()
    if d is None:
        pytest.skip("reference fixture absent: neither ../shared nor tests/fixtures holds tiny_videochat_flash")
    return d / "tiny_videochat_flash"


class _RefArrays:
    """Lazy access to the recorded reference arrays; skips a test when a key is not available.

    The full npz lives in ../shared; a fresh clone carries the subset in tests/fixtures
    (see tools/make_test_fixtures.py).
    """

    def __init__(self):
        self._files = []
        for path in (SHARED_REF / "tiny_videochat_flash_ref.npz", LOCAL_REF / "tiny_videochat_flash_ref_subset.npz"):
            if path.is_file():
                self._files.append(np.load(path))

    def __getitem__(self, key: str) -> np.ndarray:
        for f in self._files:
            if key in f.files:
                return f[key]
        pytest.skip(f"reference array {key!r} absent (no ../shared and not in the tests/fixtures subset)")


@pytest.fixture(scope="session")
def ref() -> _RefArrays:
    return _RefArrays()


@pytest.fixture(scope="session")
def ref_facts() -> dict:
    import json

    d = _ref_dir()
    if d is None:
        pytest.skip("reference fixture absent")
    with open(d / "tiny_videochat_flash_ref.json") as f:
        return json.load(f)["facts"]
