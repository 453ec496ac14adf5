"""The family registry: each original-format folder is claimed by exactly its family; `lvjax info` names it."""

import json

import pytest
from safetensors import safe_open

from lvjax.cli import main as cli
from lvjax.config import ConfigError
from lvjax.families import family_by_name, family_for, names

FOLDERS = {"videochat_flash": "videochat_flash", "videoxl": "video_xl", "videoxl_pro": "video_xl_pro",
           "videoxl2": "video_xl2"}


def _config_and_keys(folder):
    with open(folder / "config.json") as f:
        hf = json.load(f)
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as f:
        return hf, frozenset(f.keys())


@pytest.mark.parametrize("fixture,family", sorted(FOLDERS.items()))
def test_registry_picks_the_family_of_each_original_folder(recorded, fixture, family):
    hf, keys = _config_and_keys(recorded(fixture).model_dir)
    assert family_for(hf, keys).name == family


def test_xcomp_format_and_plain_qwen2(recorded):
    hf, keys = _config_and_keys(recorded("videochat_flash").model_dir)
    xcomp = dict(hf, model_type="qwen2", architectures=["LlavaQwenForCausalLM"])
    assert family_for(xcomp, keys).name == "videochat_flash"
    plain = {k: v for k, v in hf.items() if not k.startswith(("mm_", "vision_tower", "llm_compress"))}
    plain.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    llm_keys = frozenset(k for k in keys if not k.startswith(("model.vision_tower", "model.mm_projector")))
    assert family_for(plain, llm_keys).name == "qwen2"


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"x/config.json: no lvjax model family matches \(model_type='llama'"):
        family_for({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, source="x/config.json")
    with pytest.raises(ConfigError, match="unknown model family 'nope'"):
        family_by_name("nope")
    assert set(names()) == {"qwen2", "videochat_flash", "video_xl", "video_xl_pro", "video_xl2"}


@pytest.mark.parametrize("fixture,family", sorted(FOLDERS.items()))
def test_info_names_the_family(recorded, capsys, fixture, family):
    assert cli(["info", "--model", str(recorded(fixture).model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == family and info["parameters"] > 0 and info["dtype"] == "float32"
    assert "llm" in info and "vision" in info and "sampling" in info
