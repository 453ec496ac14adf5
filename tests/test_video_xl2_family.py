"""The video_xl2 family object: config and export round trips, bad inputs, the prompt and the
end-to-end answer (frames → front end → LLM) against the recorded original."""

from __future__ import annotations

import json
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from transformers import AutoTokenizer

from lvjax.config import ConfigError
from lvjax.convert.table import ConversionError, hf_to_lvjax, lvjax_to_hf
from lvjax.families.base import Encoded
from lvjax.families.video_xl2 import FAMILY, time_token_ids
from lvjax.generate import GenerationConfig
from lvjax.video.decode import VideoFrames


@pytest.fixture(scope="module")
def ref(recorded):
    return recorded("videoxl2")


@pytest.fixture(scope="module")
def loaded(ref):
    folder = ref.model_dir
    hf = json.loads((folder / "config.json").read_text())
    cfg = FAMILY.config_from_hf(hf, str(folder / "config.json"))
    tensors = load_file(str(folder / "model.safetensors"))
    return hf, cfg, tensors


def test_config_round_trip(loaded):
    hf, cfg, tensors = loaded
    assert FAMILY.config_to_hf(cfg) == hf
    assert FAMILY.claims(hf, frozenset(tensors))
    assert not FAMILY.claims(hf, frozenset(tensors) | {"model.WindowTimeToTokenAttention.q_proj.weight"})


def test_config_errors(ref, loaded, tmp_path):
    hf, _, _ = loaded
    shutil.copytree(ref.model_dir / "vision_tower", tmp_path / "vision_tower")
    src = str(tmp_path / "config.json")
    for bad, what in (({k: v for k, v in hf.items() if k != "mm_hidden_size"}, "mm_hidden_size"),
                      ({**hf, "mm_projector_type": "linear"}, "mm_projector_type"),
                      ({**hf, "mm_spatial_pool_stride": "2"}, "mm_spatial_pool_stride"),
                      ({**hf, "model_type": "qwen2"}, "model_type")):
        with pytest.raises(ConfigError, match=what) as e:
            FAMILY.config_from_hf(bad, src)
        assert "config.json" in str(e.value)


def test_export_round_trip(loaded):
    _, cfg, tensors = loaded
    rules = FAMILY.rules(cfg)
    params = hf_to_lvjax(tensors, rules, expected=FAMILY.abstract_params(cfg))
    back = lvjax_to_hf(params, rules)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    with pytest.raises(ConversionError, match="model.norm.weight"):
        hf_to_lvjax({k: v for k, v in tensors.items() if k != "model.norm.weight"}, rules)


@pytest.mark.heavy
def test_end_to_end_answer(ref, loaded):
    """Recorded frames → encode → the qwen_1_5 prompt with timestamps → w_chunk / bilevel greedy ids."""
    _, cfg, tensors = loaded
    facts = ref.facts
    tokenizer = AutoTokenizer.from_pretrained(str(ref.model_dir))
    assert time_token_ids(tokenizer) == {"time_id": facts["time_token_id"], "colon_id": facts["colon_token_id"],
                                         "pad_id": facts["special_ids"]["<|vision_pad|>"]}
    params = jax.tree.map(jnp.asarray, hf_to_lvjax(tensors, FAMILY.rules(cfg)))
    model = types.SimpleNamespace(params=params, config=cfg, tokenizer=tokenizer, family=FAMILY)
    frames = VideoFrames(ref["common/frames_uint8"], ref["common/frame_idx"], 4.0, 50.0, 200, "",
                         ref["common/frame_idx"] / 4.0)
    encoded = FAMILY.encode(params, cfg, frames)
    assert isinstance(encoded, Encoded)
    embeds, spans = FAMILY.prompt_embeds(model, encoded, facts["question"])
    assert spans.visual_start == facts["pure"]["visual_start"] and spans.total_len == facts["pure"]["total_len"]
    np.testing.assert_allclose(np.asarray(embeds), ref["common/inputs_embeds"], rtol=1e-4, atol=1e-4)
    s = facts["settings"]
    gen = GenerationConfig.from_hf(json.loads((ref.model_dir / "generation_config.json").read_text())).replace(
        do_sample=False, max_new_tokens=10)
    tokens, report = FAMILY.answer_encoded(model, encoded, facts["question"], gen=gen, seed=0, decode="bilevel",
                                           block_size_chosed=s["block_size_chosed"], prev_blocks_num=s["prev_blocks_num"],
                                           selected_config=s["selected_config"],
                                           selected_unit_indices=s["selected_unit_indices"])
    np.testing.assert_array_equal(tokens, ref["bilevel/greedy_ids"])
    assert report["prompt_tokens"] == facts["pure"]["total_len"] and report["decode"] == "bilevel"
    assert 0 < report["prefill_visited_blocks"] <= 2  # blocks of the sparse prefill over the causal layout's
    with pytest.raises(ConfigError, match="compression_plan"):
        FAMILY.answer_encoded(model, encoded, facts["question"], gen=gen, seed=0, compression_plan="lp")
