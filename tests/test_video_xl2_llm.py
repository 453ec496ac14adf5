"""Video-XL-2's LLM side against the recorded original (eval/lvu/{pure, w_chunk, w_chunk_bilevel}).

Inputs are the recorded spliced `common/inputs_embeds`; expected values are the original's arrays.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from lvjax.caches import KVCache
from lvjax.convert.table import hf_to_lvjax
from lvjax.families.video_xl2 import FAMILY, answer_from_embeds, modes, sparse
from lvjax.families.video_xl2.bilevel import bilevel_plan
from lvjax.families.video_xl2.runner import prefill
from lvjax.families.video_xl2.spans import visual_spans
from lvjax.generate import GenerationConfig

MODES = {"pure": {"prefill": "dense"}, "w_chunk": {}, "bilevel": {"decode": "bilevel"}}


@pytest.fixture(scope="module")
def ref(recorded):
    return recorded("videoxl2")


@pytest.fixture(scope="module")
def setup(ref):
    """(config, params, spans, settings) of the tiny checkpoint."""
    folder = ref.model_dir
    cfg = FAMILY.config_from_hf(json.loads((folder / "config.json").read_text()), str(folder / "config.json"))
    tensors = load_file(str(folder / "model.safetensors"))
    rules = FAMILY.rules(cfg)
    used = {k for r in rules for k in r.hf_keys()}
    params = jax.tree.map(jnp.asarray, hf_to_lvjax(tensors, rules, ignore=set(tensors) - used))
    return (cfg, params, *recorded_spans_and_options(ref))


def recorded_spans_and_options(ref):
    """(VisualSpans, the chunk-sparse / bi-level settings) of the recorded prompt."""
    facts = ref.facts
    args = facts["w_chunk"]["mask_args"]
    spans = visual_spans(ref["common/time_embedding"], args["visual_token_start_pos"], args["total_len"],
                         facts["pure"]["n_frames"], time_id=facts["time_token_id"], colon_id=facts["colon_token_id"],
                         pad_id=facts["special_ids"]["<|vision_pad|>"])
    s = facts["settings"]
    options = {"block_size_chosed": s["block_size_chosed"], "prev_blocks_num": s["prev_blocks_num"],
               "selected_config": s["selected_config"], "selected_unit_indices": s["selected_unit_indices"]}
    return spans, options


def test_time_token_spans(ref, setup):
    _, _, spans, _ = setup
    args = ref.facts["bilevel"]["mask_args"]
    assert spans.time_token_starts == args["time_token_start_indices"]
    assert spans.time_token_ends == args["time_token_end_indices"]
    assert len(spans.time_tokens()) == args["n_time_token_indices"]
    assert spans.visual_end == args["visual_token_end_pos"]


@pytest.mark.parametrize("mode", ["w_chunk", "bilevel"])
def test_chunk_sparse_mask_exact(ref, setup, mode):
    _, _, spans, options = setup
    args = ref.facts[mode]["mask_args"]
    want = np.unpackbits(ref[f"{mode}/prefill_mask_packed"], axis=-1)[:, : args["total_len"]].astype(bool)
    block, prev = options["block_size_chosed"], options["prev_blocks_num"]
    assert len(sparse.chunks(spans, block, prev)) == args["num_blocks"]
    mask = sparse.chunk_mask(spans, block, prev)
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_array_equal(sparse.chunk_layout(spans, block, prev).dense_mask(), want)
    assert mask.diagonal().all()  # no fully masked row: the 0/−1e9 mask equals the boolean one
    assert sparse.attention_ratio(mask) == pytest.approx(ref.facts[mode]["attention_ratio"], abs=1e-12)


def test_bilevel_blocks_and_positions(ref, setup):
    _, _, spans, options = setup
    facts, sel = ref.facts["bilevel"], options["selected_config"]
    plan = bilevel_plan(spans, sel["selected_chunk_size"], sel["compression"], options["selected_unit_indices"])
    assert list(plan.selected) == [int(float(i)) for i in facts["printed"][0].split("[")[1].rstrip("]").split(",")]
    assert plan.mixed_len == facts["mixed_len"]
    np.testing.assert_array_equal(ref["bilevel/suffix_position_ids"], plan.mixed_len + np.arange(spans.suffix_len))
    # Decoding continues after the cache: the mixed cache + suffix (bilevel), the whole prompt (dense).
    np.testing.assert_array_equal(ref["bilevel/decode_position_ids"], plan.mixed_len + spans.suffix_len + np.arange(9))
    for mode in ("pure", "w_chunk"):
        np.testing.assert_array_equal(ref[f"{mode}/decode_position_ids"], spans.total_len + np.arange(9))


def test_prefill_kv_and_mixed_cache(ref, setup):
    cfg, params, spans, options = setup
    layout, plan = modes.layout_and_plan(spans, modes.resolve(decode="bilevel", **options))
    _, k, v = jax.jit(prefill, static_argnums=(1, 3))(params["llm"], cfg.llm, jnp.asarray(ref["common/inputs_embeds"])[None], layout)
    for got, key in ((k, "bilevel/prefill_k_layer0"), (v, "bilevel/prefill_v_layer0")):
        want = ref[key]
        rel = np.abs(np.asarray(got[0, 0]).transpose(1, 0, 2) - want).max() / np.abs(want).max()
        assert rel <= 1e-5, (key, rel)
    mixed = KVCache.prefilled(k, v, k.shape[2]).compact(plan.pieces, plan.mixed_len)
    assert int(mixed.length) == plan.mixed_len
    for got, key in ((mixed.k, "bilevel/mixed_keys"), (mixed.v, "bilevel/mixed_values")):
        np.testing.assert_allclose(np.asarray(got[:, 0]).transpose(0, 2, 1, 3), ref[key], rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
def test_answer_logits_and_greedy_ids(ref, setup, mode):
    cfg, params, spans, options = setup
    gen_cfg = json.loads((ref.model_dir / "generation_config.json").read_text())
    # The eval decodes greedily (do_sample=False) with the folder's repetition_penalty.
    gen = GenerationConfig.from_hf(gen_cfg).replace(do_sample=False, max_new_tokens=10)
    mode_ = modes.resolve(**{**options, **MODES[mode]})
    tokens, n, logits = answer_from_embeds(params["llm"], cfg.llm, ref["common/inputs_embeds"], spans, mode_, gen,
                                           return_logits=True)
    np.testing.assert_allclose(logits["suffix"], ref[f"{mode}/logits_suffix"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits["steps"], ref[f"{mode}/greedy_step_logits"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(tokens[:n], ref[f"{mode}/greedy_ids"])


def test_options():
    assert modes.resolve() == modes.Mode("chunk_sparse", "dense", 4, 3, 4, 4, None)
    # Bi-level without relevance indices: the original's forward falls back to the dense model.
    assert modes.resolve(decode="bilevel").prefill == "dense"
    for bad in ({"prefill": "sparse"}, {"decode": "pooled"}, {"prev_blocks_num": 0}, {"block_size_chosed": 1.5},
                {"selected_config": {"chunk": 2}}, {"selected_unit_indices": [-1]}):
        with pytest.raises(ValueError, match="video_xl2"):
            modes.resolve(**bad)
