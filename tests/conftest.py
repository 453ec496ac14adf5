"""Shared test fixtures: the recorded original-model references (from ../shared or tests/fixtures).

Each recorded family lives in `../shared/fixtures/<name>_original/` (full) and, for a fresh
clone, in `tests/fixtures/<name>_original/` (the subset the tests read, written by
`tools/make_test_fixtures.py`). `Recorded(name)` finds the model folder, the arrays and the facts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"
LOCAL_FIXTURES = ROOT / "tests" / "fixtures"


class Recorded:
    """One recorded original: `name` is e.g. 'videochat_flash', 'videoxl', 'videoxl_pro', 'videoxl2'.

    `model_dir` is the tiny HF folder `tiny_<name>`; `[key]` reads an array from the full npz in
    ../shared or the subset in tests/fixtures, skipping the test (with the reason) when neither has it.
    """

    def __init__(self, name: str):
        self.name = name
        folder, model = f"{name}_original", f"tiny_{name}"
        self.dirs = [d for d in (SHARED_FIXTURES / folder, LOCAL_FIXTURES / folder) if (d / model / "config.json").is_file()]
        self._files = []
        for path in (SHARED_FIXTURES / folder / f"{model}_ref.npz", LOCAL_FIXTURES / folder / f"{model}_ref_subset.npz"):
            if path.is_file():
                self._files.append(np.load(path))
        self._model = model

    @property
    def model_dir(self) -> Path:
        if not self.dirs:
            pytest.skip(f"reference fixture absent: neither ../shared nor tests/fixtures holds {self._model}")
        return self.dirs[0] / self._model

    @property
    def facts(self) -> dict:
        path = self.model_dir.parent / f"{self._model}_ref.json"
        with open(path) as f:
            return json.load(f)["facts"]

    def __getitem__(self, key: str) -> np.ndarray:
        for f in self._files:
            if key in f.files:
                return f[key]
        pytest.skip(f"reference array {key!r} of {self._model} absent (no ../shared and not in the tests/fixtures subset)")


@pytest.fixture(scope="session")
def recorded():
    """recorded(name) → the `Recorded` reference of one original family."""
    cache: dict[str, Recorded] = {}
    return lambda name: cache.setdefault(name, Recorded(name))


@pytest.fixture(scope="session")
def tiny_vcf_dir(recorded) -> Path:
    """The tiny original-format VideoChat-Flash folder (skips when neither copy is present)."""
    return recorded("videochat_flash").model_dir


@pytest.fixture(scope="session")
def ref(recorded) -> Recorded:
    return recorded("videochat_flash")


@pytest.fixture(scope="session")
def ref_facts(recorded) -> dict:
    return recorded("videochat_flash").facts
