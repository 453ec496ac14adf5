"""Logits processing vs transformers' processors; sampling statistics; padding helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lvjax.generate import GenerationConfig, choose, process_logits, right_align


@pytest.mark.parametrize(
    "opts",
    [
        dict(repetition_penalty=1.1),
        dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1),
        dict(do_sample=True, top_k=5),
        dict(do_sample=True, top_p=0.3),
        dict(do_sample=True, temperature=1.5, top_p=0.95),
    ],
)
def test_process_logits_matches_transformers(opts):
    gen = GenerationConfig(**opts)
    rng = np.random.RandomState(0)
    logits = rng.randn(4, 300).astype(np.float32) * 3
    logits[0, :10] = logits[0, 10]  # ties at the top-k boundary
    seen_ids = rng.randint(0, 300, (4, 12))
    procs = LogitsProcessorList()
    if gen.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(gen.repetition_penalty))
    if gen.do_sample:
        if gen.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(gen.temperature))
        if gen.top_k:
            procs.append(TopKLogitsWarper(gen.top_k))
        if gen.top_p < 1.0:
            procs.append(TopPLogitsWarper(gen.top_p))
    ref = procs(torch.tensor(seen_ids), torch.tensor(logits)).numpy()
    seen = np.zeros((4, 300), bool)
    np.put_along_axis(seen, seen_ids, True, axis=1)
    ours = np.asarray(process_logits(jnp.asarray(logits), jnp.asarray(seen), gen))
    assert np.array_equal(np.isinf(ours), np.isinf(ref))
    finite = ~np.isinf(ref)
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-6)


def test_sampling_follows_filtered_distribution():
    gen = GenerationConfig(do_sample=True, top_k=3)
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 4000))
    keys = jax.random.split(jax.random.key(0), 1)[0]
    toks = np.asarray(choose(logits, jnp.zeros((4000, 4), bool), gen, keys))
    freq = np.bincount(toks, minlength=4) / len(toks)
    np.testing.assert_allclose(freq, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=0.03)


def test_left_align_either_padding():
    ids = np.array([[0, 0, 5, 6], [7, 8, 9, 0]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 0]])
    out, valid = right_align(ids, mask, 5, pad_id=1)
    np.testing.assert_array_equal(out, [[1, 1, 1, 5, 6], [1, 1, 7, 8, 9]])
    np.testing.assert_array_equal(valid, [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        right_align(ids, np.array([[1, 1, 1, 1], [0, 0, 0, 0]]), 5, 1)
