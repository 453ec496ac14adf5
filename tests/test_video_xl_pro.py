"""Video-XL-Pro (family `video_xl_pro`) against the recorded original: prompt, selector, splice, LLM, greedy,
the second keep-rate draw, export round trip and bad-input errors."""

from __future__ import annotations

import json
import shutil
import types

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from transformers import AutoTokenizer

from lvjax.config import ConfigError
from lvjax.convert.hf import hf_to_params, read_hf_folder, write_hf_folder
from lvjax.convert.table import flatten_paths, lvjax_to_hf
from lvjax.families.video_xl_pro import FAMILY, prepare_inputs, time_ids_for
from lvjax.families.video_xl_pro.selector import draw_keep_rate
from lvjax.generate import GenerationConfig
from lvjax.models import llm
from lvjax.models.qwen2 import Qwen2
from lvjax.prompt import build_prompt, tokenize_with_image
from lvjax.video import VideoFrames


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def ref(recorded):
    return recorded("videoxl_pro")


@pytest.fixture(scope="module")
def model(ref):
    folder = str(ref.model_dir)
    hf, tensors = read_hf_folder(folder, progress=False)
    cfg = FAMILY.config_from_hf(hf, f"{folder}/config.json")
    params, _ = hf_to_params(FAMILY, cfg, tensors, folder, progress=False)
    tok = AutoTokenizer.from_pretrained(folder)
    return types.SimpleNamespace(params=params, config=cfg, tokenizer=tok, family=FAMILY, tensors=tensors, hf=hf,
                                 generation=GenerationConfig(max_new_tokens=10))


@pytest.fixture(scope="module")
def frames(ref):
    idx = ref["video/frame_idx"]
    return VideoFrames(ref["video/frames_uint8"], idx, 2.0, 24.0, 48, "", idx / 2.0)


@pytest.fixture(scope="module")
def encoded(model, frames, ref):
    return FAMILY.encode(model.params, model.config, frames, pad_repeat_counts=ref["vision/pad_repeat_counts"])


def _prepare(model, encoded, ref, keep_rate):
    time_ids, pad = time_ids_for(model.tokenizer, encoded.frames.timestamps)
    return prepare_inputs(model.params, model.config, encoded.visual, time_ids, pad, ref["prompt/input_ids"], keep_rate)


def test_prompt_ids(model, frames, ref):
    time_ids, pad = time_ids_for(model.tokenizer, frames.timestamps)
    assert pad == 503
    np.testing.assert_array_equal(time_ids, ref["prompt/time_embedding"])
    ids, image = tokenize_with_image(build_prompt(ref.facts["question"]), model.tokenizer)
    np.testing.assert_array_equal(ids, ref["prompt/input_ids"])
    np.testing.assert_array_equal(np.delete(ids, image), ref["selector/text_ids"])
    assert draw_keep_rate(ref.facts["seeds"]["keep"]) == float(ref["selector/drop_rate"])
    assert draw_keep_rate(ref.facts["seeds"]["keep_alt"]) == float(ref["alt/drop_rate"])


def test_selector_and_splice(model, encoded, ref):
    np.testing.assert_array_equal(encoded.cache["pad_repeat_counts"], ref["vision/pad_repeat_counts"])
    x, st = _prepare(model, encoded, ref, float(ref["selector/drop_rate"]))
    for key in ("visual_seq", "text_feat", "wtta_out", "scores", "rotary_out"):
        assert _rel(st[key], ref[f"selector/{key}"]) < 1e-5, key
    np.testing.assert_array_equal(st["kept_visual_positions"], ref["selector/kept_visual_positions"])
    assert x.shape == (335, 64)
    assert _rel(x, ref["llm/inputs_embeds"]) < 1e-5


def _logits(model, x):
    cfg = model.config.llm
    h, *_ = llm.prefill(model.params["llm"], cfg, x[None], jnp.ones((1, x.shape[0]), bool))
    norm = Qwen2(cfg).apply({"params": model.params["llm"]}, h, method=lambda m, y: m.norm(y))
    return np.asarray(llm.head(model.params["llm"], cfg, h))[0], np.asarray(norm)[0]


def test_llm_logits(model, encoded, ref):
    x, _ = _prepare(model, encoded, ref, float(ref["selector/drop_rate"]))
    logits, normed = _logits(model, x)
    assert _rel(normed, ref["llm/final_norm_hidden"]) < 1e-5
    np.testing.assert_allclose(logits[-61:], ref["llm/logits_suffix"], atol=1e-4)
    np.testing.assert_allclose(logits[-1], ref["llm/last_logits"], atol=1e-4)


@pytest.mark.heavy
def test_decode_step_logits(model, encoded, ref):
    x, _ = _prepare(model, encoded, ref, float(ref["selector/drop_rate"]))
    # Decode-step logits, teacher-forced on the recorded greedy ids (a causal model: the same function).
    ids = ref["greedy/ids"]
    steps = jnp.concatenate([x, llm.embed(model.params["llm"], model.config.llm, jnp.asarray(ids[None, :-1]))[0]])
    np.testing.assert_allclose(_logits(model, steps)[0][-10:], ref["greedy/step_logits"], atol=1e-4)


def test_greedy_answer(model, encoded, ref):
    seed = ref.facts["seeds"]["keep"]  # the keep rate drawn from the seed = the original's draw
    ids, report = FAMILY.answer_encoded(model, encoded, ref.facts["question"], gen=model.generation, seed=seed)
    np.testing.assert_array_equal(ids, ref["greedy/ids"])
    assert report["kept_visual"] == 240 and report["prompt_tokens"] == 335


@pytest.mark.heavy
def test_alt_keep_rate(model, encoded, ref):
    x, st = _prepare(model, encoded, ref, draw_keep_rate(ref.facts["seeds"]["keep_alt"]))
    np.testing.assert_array_equal(st["kept_visual_positions"], ref["alt/kept_visual_positions"])
    np.testing.assert_allclose(_logits(model, x)[0][-1], ref["alt/last_logits"], atol=1e-4)


@pytest.mark.heavy
def test_pad_counts_option_reencodes(model, encoded, ref):
    _, report = FAMILY.answer_encoded(model, encoded, ref.facts["question"], gen=GenerationConfig(max_new_tokens=1),
                                      keep_rate=0.99, pad_repeat_counts=[1, 1, 1, 1, 1, 3])
    assert report["pad_repeat_counts"] == [1, 1, 1, 1, 1, 3] and report["kept_visual"] == 272
    with pytest.raises(ConfigError, match="unknown option"):
        FAMILY.answer_encoded(model, encoded, "q", gen=model.generation, compression="x")


def test_export_round_trip(model, ref, tmp_path):
    src = ref.model_dir
    tensors = lvjax_to_hf(model.params, FAMILY.rules(model.config))
    assert set(tensors) == set(model.tensors)
    for k, v in model.tensors.items():
        assert tensors[k].dtype == v.dtype and np.array_equal(tensors[k], v), k
    assert FAMILY.config_to_hf(model.config) == json.loads((src / "config.json").read_text())

    out = tmp_path / "export"
    write_hf_folder(str(out), FAMILY.config_to_hf(model.config), model.params, FAMILY, model.config, False, str(src))
    orig, back = load_file(str(src / "vision_tower/model.safetensors")), load_file(str(out / "vision_tower/model.safetensors"))
    assert set(orig) == set(back) and all(np.array_equal(orig[k], back[k]) for k in orig)
    vis_cfg = json.loads((src / "vision_tower/config.json").read_text())
    new_cfg = json.loads((out / "vision_tower/config.json").read_text())
    assert {k: vis_cfg[k] for k in new_cfg} == new_cfg

    hf, again = read_hf_folder(str(out), progress=False)
    cfg2 = FAMILY.config_from_hf(hf, str(out / "config.json"))
    params2, _ = hf_to_params(FAMILY, cfg2, again, str(out), progress=False)
    a, b = flatten_paths(model.params), flatten_paths(params2)
    assert set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_export_without_source_vision_folder(model, tmp_path):
    tensors = lvjax_to_hf(model.params, FAMILY.rules(model.config))
    FAMILY.write_side_folders(str(tmp_path), model.config, tensors)
    written = load_file(str(tmp_path / "vision_tower/model.safetensors"))
    assert "vision_model.encoder.layers.1.mlp.fc2.weight" in written and len(written) == 37  # embeddings 3 + 2 layers × 16 + post_layernorm 2
    assert json.loads((tmp_path / "vision_tower/config.json").read_text())["num_hidden_layers"] == 3


def test_bad_inputs(model, ref, tmp_path):
    src = ref.model_dir
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(ConfigError, match=r"vision_tower/config.json: file not found"):
        FAMILY.config_from_hf(model.hf, str(tmp_path / "config.json"))
    shutil.copytree(src / "vision_tower", tmp_path / "vision_tower")
    bad = json.loads((src / "vision_tower/config.json").read_text())
    bad["hidden_act"] = "relu"
    (tmp_path / "vision_tower/config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"vision_tower/config.json: hidden_act='relu'"):
        FAMILY.config_from_hf(model.hf, str(tmp_path / "config.json"))
    with pytest.raises(ConfigError, match=r"config.json: mm_projector_type='linear'"):
        FAMILY.config_from_hf(dict(model.hf, mm_projector_type="linear"), str(src / "config.json"))
    with pytest.raises(ConfigError, match=r"config.json: missing field\(s\) hidden_size"):
        FAMILY.config_from_hf({k: v for k, v in model.hf.items() if k != "hidden_size"}, str(src / "config.json"))
    assert FAMILY.claims(model.hf, frozenset(model.tensors))
