"""Video-XL against the recorded original (../shared/fixtures/videoxl_original, README there).

Layout arrays exact; pixels atol 1e-5; activations and memory K/V ≤ 1e-5 relative (to the
array's max); logits atol 1e-4; greedy / eval-style ids identical — for ratio 4 ('main'),
ratio 8 ('second') and the step-random mix ('mix', 'mix2').
"""

from __future__ import annotations

import json
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from lvjax.config import ConfigError
from lvjax.convert.hf import read_hf_folder
from lvjax.convert.table import flatten_paths, hf_to_lvjax, lvjax_to_hf
from lvjax.families.base import Encoded
from lvjax.families.video_xl import FAMILY, prefill_memory, prefill_text, window_plan
from lvjax.families.video_xl.convert import set_resize_rows, write_clip_folder
from lvjax.families.video_xl.memory import PAD, VST, decode, window_embeds
from lvjax.families.video_xl.prompt import prompt_ids
from lvjax.families.video_xl.vision import clip_preprocess, encode_pixels
from lvjax.generate import GenerationConfig, sample_rng
from lvjax.models import llm as llm_lib
from lvjax.video.sampling import linspace_indices

NAME = "videoxl"


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def ref(recorded):
    return recorded(NAME)


@pytest.fixture(scope="module")
def model(ref):
    folder = ref.model_dir
    hf, tensors = read_hf_folder(str(folder), progress=False)
    cfg = FAMILY.config_from_hf(hf, str(folder / "config.json"))
    params = hf_to_lvjax(tensors, FAMILY.rules(cfg), expected=FAMILY.abstract_params(cfg))
    params = set_resize_rows(params, ref["loader/embed_tokens_new_row"], ref["loader/lm_head_new_row"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    return types.SimpleNamespace(config=cfg, params=params, tokenizer=tok, hf=hf, tensors=tensors, family=FAMILY, source=folder,
                                 generation=GenerationConfig(max_new_tokens=10))


@pytest.fixture(scope="module")
def visual(model, ref):
    pixels = clip_preprocess(ref["video/frames_uint8"], model.config.preprocess)
    tokens, stages = encode_pixels(model.params, jnp.asarray(pixels), cfg=model.config, intermediates=True)
    return pixels, tokens, stages


@pytest.fixture(scope="module")
def ids(model):
    return prompt_ids(model.tokenizer, QUESTION)


QUESTION = ("What is the man in the video doing?\nA. Cooking\nB. Dancing\nC. Reading\nD. Swimming\n"
            "Answer with the option's letter from the given choices directly.")


def run(model, ids, tokens, plan, keep_logits=True):
    """Prefill [prefix | windows | text] and decode 10 greedy tokens."""
    mem, lens = prefill_memory(model.params, model.config, ids.prefix, tokens, plan)
    hidden, mem2 = prefill_text(model.params, model.config, mem, ids.text, 10)
    n = len(ids.text)
    out = decode(model.params["llm"], mem2, hidden[:, n - 1], jnp.zeros((1, model.config.llm.vocab_size), bool),
                 sample_rng(0), cfg=model.config.llm, beacon=model.config.beacon_param,
                 gen=GenerationConfig(max_new_tokens=10), keep_logits=keep_logits)
    return types.SimpleNamespace(mem=mem, lens=np.asarray(lens), hidden=hidden[0, :n], text_mem=mem2, decoded=out)


@pytest.fixture(scope="module")
def results(model, ids, visual):
    cache = {}

    def get(tag):
        if tag not in cache:
            ratio = {"main": 4, "second": 8}[tag]
            plan = window_plan(model.config, 160, ratio)
            cache[tag] = (plan, run(model, ids, visual[1], plan))
        return cache[tag]

    return get


# ----------------------------------------------------------------------------- inputs and vision


def test_sampling_and_preprocess(ref, visual):
    np.testing.assert_array_equal(linspace_indices(23, 10), ref["video/frame_idx"])
    np.testing.assert_allclose(visual[0], ref["preprocess/pixel_values"].transpose(0, 2, 3, 1), atol=1e-5, rtol=0)


def test_vision_stages(ref, visual):
    _, tokens, st = visual
    assert rel(st["vision"], ref["vision/vit_features"]) <= 1e-5
    assert rel(st["projector"], ref["vision/projector_out"]) <= 1e-5
    assert rel(st["pooled"], ref["vision/pooled"]) <= 1e-5
    assert rel(tokens, ref["vision/image_features"]) <= 1e-5


def test_prompt(ref, model, ids):
    assert model.tokenizer.decode(list(ids.prefix) + list(ids.text)) == ref.facts["prompt"].replace("<image>", "")
    np.testing.assert_array_equal(ids.ids, ref["prompt/input_ids"])
    np.testing.assert_array_equal(ids.expanded(model.config.placeholder_id, 160), ref["prompt/expanded_input_ids"])


# ----------------------------------------------------------------------------- the beacon LLM


def step_layout(plan, lens, n_prefix, n_text, placeholder):
    """The per-step arrays of the original (`{tag}/step_*`) from the plan and the device's memory lengths."""
    src, _, n_vst = plan.arrays()
    mem_len = [0, *lens.tolist()]
    lengths, sizes = [n_prefix], [0]
    ids, beacon, pos = [np.zeros(n_prefix, np.int64)], [np.zeros(n_prefix, np.int64)], [np.arange(n_prefix)]
    for i, s in enumerate(src):
        s = s[s != PAD]
        ids.append(np.where(s == VST, placeholder + 1, placeholder))
        beacon.append((s == VST).astype(np.int64))
        pos.append(mem_len[i + 1] + np.arange(len(s)))
        lengths.append(len(s))
        sizes.append(int(n_vst[i]))
    after_video = n_prefix + int(n_vst.sum())
    mem_len.append(after_video)
    ids.append(np.zeros(n_text, np.int64))
    beacon.append(np.zeros(n_text, np.int64))
    pos.append(after_video + np.arange(n_text))
    lengths.append(n_text)
    sizes.append(0)
    return dict(lengths=lengths, ids=np.concatenate(ids), beacon=np.concatenate(beacon), pos=np.concatenate(pos),
                mem_len=mem_len, sizes=sizes)


@pytest.mark.parametrize("tag", ["main", "second"])
def test_layout(tag, ref, model, ids, results):
    plan, res = results(tag)
    lay = step_layout(plan, res.lens, len(ids.prefix), len(ids.text), model.config.placeholder_id)
    steps = np.cumsum([0, *ref[f"{tag}/step_lengths"]])
    ref_ids = ref[f"{tag}/step_input_ids"].copy()
    text_rows = np.r_[0:steps[1], steps[-2]:steps[-1]]
    np.testing.assert_array_equal(ref_ids[text_rows], [*ids.prefix, *ids.text])
    ref_ids[text_rows] = 0
    np.testing.assert_array_equal(lay["lengths"], ref[f"{tag}/step_lengths"])
    np.testing.assert_array_equal(lay["ids"], ref_ids)
    np.testing.assert_array_equal(lay["beacon"], ref[f"{tag}/step_beacon_indices"])
    np.testing.assert_array_equal(lay["pos"], ref[f"{tag}/step_position_ids"])
    np.testing.assert_array_equal(lay["mem_len"], ref[f"{tag}/step_mem_len"])
    np.testing.assert_array_equal(lay["sizes"], ref[f"{tag}/step_beacon_size"])
    np.testing.assert_array_equal([0, *plan.ratios, 0], ref[f"{tag}/step_ratio"])
    np.testing.assert_array_equal(plan.ratios, ref[f"{tag}/window_ratios"])
    sink, vst = len(ids.prefix), np.cumsum(lay["sizes"])
    after = [(sink, int(vst[i]), 0) for i in range(len(lay["sizes"]) - 1)] + [(sink, int(vst[-1]), len(ids.text))]
    np.testing.assert_array_equal(after, ref[f"{tag}/step_mem_after"])
    np.testing.assert_array_equal(ref[f"{tag}/memory_sizes"], after[-1])
    assert int(res.text_mem.length) == sum(after[-1])


@pytest.mark.parametrize("tag", ["main", "second"])
def test_embeds_memory_logits(tag, ref, model, ids, visual, results):
    plan, res = results(tag)
    p = model.params["llm"]
    src = plan.arrays()[0]
    windows = [np.asarray(window_embeds(p, visual[1], jnp.asarray(s)))[s != PAD] for s in src]
    text = lambda t: np.asarray(llm_lib.embed(p, model.config.llm, jnp.asarray([t], jnp.int32)))[0]  # noqa: E731
    embeds = np.concatenate([text(ids.prefix), *windows, text(ids.text)])
    assert rel(embeds, ref[f"{tag}/inputs_embeds"]) <= 1e-5
    n = int(res.text_mem.length)
    for name, arr in (("keys", res.text_mem.k), ("values", res.text_mem.v)):
        assert rel(np.asarray(arr)[:, 0, :n].transpose(0, 2, 1, 3), ref[f"{tag}/memory_{name}"]) <= 1e-5
    normed = llm_lib.Qwen2(model.config.llm).apply({"params": p}, res.hidden, method=lambda m, x: m.norm(x))
    assert rel(normed, ref[f"{tag}/final_norm_hidden_text"]) <= 1e-5
    logits = np.asarray(llm_lib.head(p, model.config.llm, res.hidden[None]))[0]
    np.testing.assert_allclose(logits, ref[f"{tag}/logits_text"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[-1], ref[f"{tag}/last_logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("tag", ["main", "second"])
def test_greedy(tag, ref, results):
    _, res = results(tag)
    tokens, count, lengths, logits = res.decoded
    np.testing.assert_array_equal(np.asarray(tokens)[: int(count)], ref[f"{tag}/greedy_ids"])
    np.testing.assert_allclose(np.asarray(logits), ref[f"{tag}/greedy_step_logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.asarray(lengths)[1:], ref[f"{tag}/decode_position_ids"])
    np.testing.assert_array_equal(np.asarray(lengths)[1:], ref[f"{tag}/decode_mem_len"])


@pytest.mark.heavy
def test_step_random_mix(ref, model, ids, visual):
    """A fresh rng draws [2, 8, 4] (forward); carried on, [4, 4, 8] (generate), then [2, 8, 2] (third sample)."""
    rng = np.random.default_rng(42)
    plans = [window_plan(model.config, 160, None, rng) for _ in range(3)]
    assert window_plan(model.config, 160).ratios == plans[0].ratios  # default: a fresh default_rng(42)
    for tag, plan in (("mix", plans[0]), ("mix2", plans[2])):
        np.testing.assert_array_equal(plan.ratios, ref[f"{tag}/window_ratios"])
        mem, _ = prefill_memory(model.params, model.config, ids.prefix, visual[1], plan)
        np.testing.assert_array_equal(int(mem.length), ref[f"{tag}/memory_sizes"][:2].sum())
        hidden, _ = prefill_text(model.params, model.config, mem, ids.text, 0)
        last = llm_lib.head(model.params["llm"], model.config.llm, hidden[:, len(ids.text) - 1:len(ids.text)])[0, 0]
        np.testing.assert_allclose(np.asarray(last), ref[f"{tag}/last_logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(plans[1].ratios, ref["mix/greedy_window_ratios"])
    res = run(model, ids, visual[1], plans[1])
    tokens, count, lengths, logits = res.decoded
    np.testing.assert_array_equal(np.asarray(tokens)[: int(count)], ref["mix/greedy_ids"])
    np.testing.assert_allclose(np.asarray(logits), ref["mix/greedy_step_logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.asarray(lengths)[1:], ref["mix/decode_position_ids"])
    np.testing.assert_array_equal(np.asarray(lengths)[1:], ref["mix/decode_mem_len"])


def test_answer_encoded_evalstyle_and_reuse(ref, model, visual):
    """The protocol path: repetition penalty 1.05 over the expanded prompt (placeholders included);
    a second question at the same fixed ratio reuses the prefilled memory."""
    frames = types.SimpleNamespace(frames=ref["video/frames_uint8"], __len__=lambda self: 10)
    enc = Encoded(visual[1], frames, {})
    gen = GenerationConfig(max_new_tokens=10, repetition_penalty=1.05, eos_token_ids=(522, 520), pad_token_id=520)
    out, report = FAMILY.answer_encoded(model, enc, QUESTION, gen=gen, seed=0, compression_ratio=4)
    np.testing.assert_array_equal(out, ref["main/evalstyle_ids"])
    assert report["window_ratios"] == [4, 4, 4] and not report["memory_reused"]
    assert report["visual_tokens"] == 160 and report["prompt_tokens"] == 235
    greedy, report = FAMILY.answer_encoded(model, enc, QUESTION, gen=gen.replace(repetition_penalty=1.0), seed=0,
                                           compression_ratio=4)
    np.testing.assert_array_equal(greedy, ref["main/greedy_ids"])
    assert report["memory_reused"]


# ----------------------------------------------------------------------------- conversion and config


def test_export_round_trip(model, tmp_path):
    cfg = model.config
    exported = lvjax_to_hf(model.params, FAMILY.rules(cfg))
    assert set(exported) == set(model.tensors)
    for k, v in model.tensors.items():
        assert exported[k].dtype == v.dtype and np.array_equal(exported[k], v), k
    again = hf_to_lvjax(exported, FAMILY.rules(cfg), expected=FAMILY.abstract_params(cfg))
    again = set_resize_rows(again, model.params["llm"]["embed_tokens"]["embedding"][-1],
                            model.params["llm"]["lm_head"]["kernel"][:, -1])
    a, b = flatten_paths(again), flatten_paths(model.params)
    assert set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    assert FAMILY.config_to_hf(cfg) == model.hf
    write_clip_folder(str(tmp_path), cfg, exported)
    src = tmp_path / "vision_tower"
    orig = load_file(str(model.source / "vision_tower" / "model.safetensors"))
    out = load_file(str(src / "model.safetensors"))
    assert set(out) == set(orig) and all(np.array_equal(out[k], orig[k]) for k in orig)
    for name in ("config.json", "preprocessor_config.json"):
        with open(src / name) as f, open(model.source / "vision_tower" / name) as g:
            assert json.load(f) == json.load(g)
    assert FAMILY.side_folders(model.hf) == ("vision_tower",)


def test_default_vocab_row_is_zero(model):
    params = hf_to_lvjax(model.tensors, FAMILY.rules(model.config), expected=FAMILY.abstract_params(model.config))
    assert params["llm"]["embed_tokens"]["embedding"].shape == (577, 64)
    assert not params["llm"]["embed_tokens"]["embedding"][576].any()
    assert not params["llm"]["lm_head"]["kernel"][:, 576].any()


def _folder(ref, tmp_path, with_clip=True, **fields):
    out = tmp_path / "m"
    out.mkdir()
    hf = json.loads((ref.model_dir / "config.json").read_text())
    hf.update(fields)
    (out / "config.json").write_text(json.dumps(hf))
    if with_clip:
        shutil.copytree(ref.model_dir / "vision_tower", out / "vision_tower")
    return hf, str(out / "config.json")


@pytest.mark.parametrize("fields, with_clip, match", [
    ({}, False, "mm_vision_tower='vision_tower': no CLIP folder"),
    ({"beacon_window": 72, "beacon_stride": 72}, True, "beacon_window=72 is not a multiple of the 16 visual tokens per frame"),
    ({"beacon_attn": "segmentation"}, True, "beacon_attn='segmentation' is not supported"),
])
def test_bad_config(ref, tmp_path, fields, with_clip, match):
    hf, source = _folder(ref, tmp_path, with_clip, **fields)
    with pytest.raises(ConfigError, match=match):
        FAMILY.config_from_hf(hf, source)


def test_plain_qwen2_has_no_beacon_params():
    from lvjax.config import LLMConfig
    from lvjax.models.qwen2 import Qwen2

    cfg = LLMConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1)
    tree = jax.eval_shape(lambda: Qwen2(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"]
    assert sorted(tree["layers"]["self_attn"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


@pytest.mark.heavy
def test_prefill_temp_memory_flat_in_frames(model):
    """The compiled video prefill's temporary buffers at 4× the frames stay < 1.5× (ratio fixed)."""
    from lvjax.families.video_xl.memory import prefill_video

    params = FAMILY.abstract_params(model.config)
    temp = []
    for frames in (64, 256):
        src, rows, n_vst = window_plan(model.config, frames * 16, 4).arrays()
        compiled = prefill_video.lower(params["llm"], jax.ShapeDtypeStruct((1, 14), jnp.int32),
                                       jax.ShapeDtypeStruct((frames * 16, 64), jnp.float32), src, rows, n_vst,
                                       cfg=model.config.llm, beacon=model.config.beacon_param).compile()
        temp.append(compiled.memory_analysis().temp_size_in_bytes)
    assert temp[1] < 1.5 * temp[0], temp
