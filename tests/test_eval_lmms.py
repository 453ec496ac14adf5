"""The lmms-eval plugin: checked against a minimal stub of lmms-eval's base API (lmms-eval itself
is heavy: its dependencies are not part of the test environment); the real one when installed."""

import importlib
import sys
import tomllib
import types
from abc import ABC, abstractmethod
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class _Instance:
    def __init__(self, args):
        self.args = args


@pytest.fixture
def stub_lmms_eval(monkeypatch):
    class lmms(ABC):  # the abstract methods lmms-eval 0.7 declares
        def __init__(self):
            self._rank, self._world_size = 0, 1

        @abstractmethod
        def loglikelihood(self, requests): ...

        @abstractmethod
        def generate_until(self, requests): ...

        @abstractmethod
        def generate_until_multi_round(self, requests): ...

    class ModelManifest:
        def __init__(self, model_id, simple_class_path=None, chat_class_path=None, aliases=()):
            self.model_id, self.simple_class_path = model_id, simple_class_path

    registry = {}
    mods = {"lmms_eval": types.ModuleType("lmms_eval"), "lmms_eval.api": types.ModuleType("lmms_eval.api"),
            "lmms_eval.api.model": types.ModuleType("lmms_eval.api.model"),
            "lmms_eval.api.registry": types.ModuleType("lmms_eval.api.registry"),
            "lmms_eval.models": types.ModuleType("lmms_eval.models"),
            "lmms_eval.models.registry_v2": types.ModuleType("lmms_eval.models.registry_v2")}
    mods["lmms_eval.api.model"].lmms = lmms
    mods["lmms_eval.api.registry"].register_model = lambda name: (lambda cls: registry.setdefault(name, cls))
    mods["lmms_eval.models.registry_v2"].ModelManifest = ModelManifest
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "lvjax.eval.lmms", raising=False)
    yield registry
    sys.modules.pop("lvjax.eval.lmms", None)


class _Model:
    def __init__(self):
        self.calls = []

    def answer(self, video, question, **options):
        self.calls.append((video, question, options))
        return f"B ({len(question)})", {}


def test_plugin_against_the_base_api(stub_lmms_eval, monkeypatch):
    import lvjax

    model = _Model()
    monkeypatch.setattr(lvjax, "load", lambda path: model)
    plugin = importlib.import_module("lvjax.eval.lmms")
    assert stub_lmms_eval["lvjax"] is plugin.LvjaxLMM
    m = plugin.manifest()
    assert (m.model_id, m.simple_class_path) == ("lvjax", "lvjax.eval.lmms.LvjaxLMM")
    lm = plugin.LvjaxLMM(pretrained="DIR", max_frames="8")  # model_args arrive as strings
    lm.task_dict = {"mlvu": {"test": {0: {"video": "a.mp4"}, 1: {"video": "b.mp4"}}}}
    visual = lambda doc: [doc["video"], {"video_read_type": "decord"}]  # noqa: E731
    out = lm.generate_until([_Instance(("Q1?", {"max_new_tokens": 16}, visual, 0, "mlvu", "test")),
                             _Instance(("Q22?", {}, visual, 1, "mlvu", "test"))])
    assert out == ["B (3)", "B (4)"]
    assert model.calls[0] == ("a.mp4", "Q1?", {"max_frames": 8, "min_frames": 8, "max_new_tokens": 16})
    rounds = lm.generate_until_multi_round([_Instance(("Q?", {}, visual, None, 1, "mlvu", "test"))])
    assert rounds == ["B (2)"] and model.calls[-1][0] == "b.mp4"
    bounded = lambda doc: [doc["video"], {"start": 1, "end": 3.5, "video_read_type": "decord"}]  # noqa: E731  (mvbench)
    lm.generate_until([_Instance(("Q?", {}, bounded, 0, "mlvu", "test"))])
    assert model.calls[-1][2] == {"max_frames": 8, "min_frames": 8, "start": 1.0, "end": 3.5}
    with pytest.raises(NotImplementedError):
        lm.loglikelihood([])


def test_entry_point_and_extra_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["lmms_eval.models"]["lvjax"] == "lvjax.eval.lmms:manifest"
    assert any(dep.startswith("matplotlib") for dep in project["optional-dependencies"]["eval"])


@pytest.mark.heavy
def test_real_lmms_eval_resolves_the_plugin():
    pytest.importorskip("lmms_eval")
    from lmms_eval.models import get_model

    assert get_model("lvjax").__name__ == "LvjaxLMM"
