"""HF ↔ lvjax conversion: round trips, sharded and bf16 folders, bad input."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import lvjax
from lvjax.cli import main as cli
from tests.hf_qwen2 import make_qwen2


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    make_qwen2(path, tied=False)
    return path


def _tensors(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(folder, name)))
    return out


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_identical_and_loadable(tmp_path, tied):
    src = tmp_path / "src"
    torch_model = make_qwen2(src, tied=tied, seed=3)
    assert cli(["convert", "--from-hf", str(src), "--out", str(tmp_path / "ckpt"), "--quiet"]) == 0
    assert cli(["export", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")]) == 0
    a, b = _tensors(src), _tensors(tmp_path / "back")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.tensor(np.random.RandomState(0).randint(0, 160, (2, 17)))
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(ids).logits.numpy(), torch_model(ids).logits.numpy(), atol=1e-6)
    ours = lvjax.load(str(tmp_path / "ckpt")).logits(ids.numpy())
    with torch.no_grad():
        assert np.abs(ours - torch_model(ids).logits.numpy()).max() < 1e-4


def test_sharded_bf16_folder(tmp_path):
    src = tmp_path / "src"
    make_qwen2(src, dtype=torch.bfloat16)
    tensors = load_file(str(src / "model.safetensors"))
    os.remove(src / "model.safetensors")
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, str(src / name))
        weight_map.update({k: name for k in ks})
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    lvjax.convert_hf(str(src), str(tmp_path / "ckpt"), progress=False)
    lvjax.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "back"))
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(back) == keys
    for k in keys:
        assert back[k].dtype == tensors[k].dtype and np.array_equal(back[k], tensors[k])


def _run_bad(tmp_path, src, capsys):
    out = tmp_path / "out"
    code = cli(["convert", "--from-hf", str(src), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert not out.exists() and not any(p.name.startswith("out.tmp") for p in tmp_path.iterdir())
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def _copy(hf_dir, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(hf_dir, dst)
    return dst


def test_missing_folder(tmp_path, capsys):
    assert "no such directory" in _run_bad(tmp_path, tmp_path / "nope", capsys)


def test_missing_config(tmp_path, hf_dir, capsys):
    src = _copy(hf_dir, tmp_path)
    os.remove(src / "config.json")
    assert "config.json: file not found" in _run_bad(tmp_path, src, capsys)


def test_unknown_model_type(tmp_path, hf_dir, capsys):
    src = _copy(hf_dir, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "llama"
    (src / "config.json").write_text(json.dumps(cfg))
    assert "model_type='llama'" in _run_bad(tmp_path, src, capsys)


def _edit_weights(src, fn):
    tensors = load_file(str(src / "model.safetensors"))
    fn(tensors)
    save_file(tensors, str(src / "model.safetensors"))


def test_missing_key(tmp_path, hf_dir, capsys):
    src = _copy(hf_dir, tmp_path)
    _edit_weights(src, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    assert "model.layers.1.mlp.up_proj.weight" in _run_bad(tmp_path, src, capsys)


def test_extra_key(tmp_path, hf_dir, capsys):
    src = _copy(hf_dir, tmp_path)
    _edit_weights(src, lambda t: t.update({"model.layers.0.mystery.weight": np.zeros(3, np.float32)}))
    assert "model.layers.0.mystery.weight" in _run_bad(tmp_path, src, capsys)


def test_shape_mismatch(tmp_path, hf_dir, capsys):
    src = _copy(hf_dir, tmp_path)
    _edit_weights(src, lambda t: t.update({"model.norm.weight": np.zeros(7, np.float32)}))
    err = _run_bad(tmp_path, src, capsys)
    assert "model.norm.weight" in err and "(7,)" in err


def test_pickle_refused(tmp_path, hf_dir, capsys):
    src = _copy(hf_dir, tmp_path)
    os.remove(src / "model.safetensors")
    (src / "pytorch_model.bin").write_bytes(b"not even loaded")
    assert "pytorch_model.bin" in _run_bad(tmp_path, src, capsys)


def test_existing_output_refused(tmp_path, hf_dir, capsys):
    (tmp_path / "out").mkdir()
    code = cli(["convert", "--from-hf", str(hf_dir), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 1 and "already exists" in capsys.readouterr().err
