"""Qwen2 parity with transformers: logits on padded batches, greedy generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import lvjax
from tests.hf_qwen2 import make_qwen2

CASES = {
    "mha-untied": dict(hidden=48, heads=4, kv_heads=4),
    "gqa2-tied": dict(hidden=48, heads=4, kv_heads=2, tied=True),
    "gqa6-yarn": dict(hidden=72, heads=6, kv_heads=1, yarn=True),
    "odd-hidden-tied-yarn": dict(hidden=45, heads=6, kv_heads=3, head_dim=8, inter=77, tied=True, yarn=True),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    torch_model = make_qwen2(path, **CASES[request.param])
    return torch_model, lvjax.load(str(path))


def _batch(vocab, b=3, t=40, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, vocab, (b, t))
    mask = np.ones((b, t), np.int64)
    mask[1, :7] = 0  # left padding
    mask[2, -9:] = 0  # right padding
    return ids, mask


def test_logits_match_transformers(pair):
    torch_model, model = pair
    ids, mask = _batch(model.config.vocab_size)
    ours = model.logits(ids, mask)
    with torch.no_grad():
        ref = torch_model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(ours - ref)[valid].max() <= 1e-4


@pytest.mark.parametrize("side", ["left", "right"])
def test_greedy_generation_matches_transformers(pair, side):
    torch_model, model = pair
    rng = np.random.RandomState(1)
    lengths = [12, 9]
    ids = np.zeros((2, 12), np.int64)
    mask = np.zeros((2, 12), np.int64)
    for i, n in enumerate(lengths):
        row = rng.randint(3, model.config.vocab_size, n)
        sl = slice(12 - n, 12) if side == "left" else slice(0, n)
        ids[i, sl], mask[i, sl] = row, 1
    ours = model.generate(ids, mask, max_new_tokens=32, eos_token_ids=(), pad_token_id=0)
    for i, n in enumerate(lengths):  # transformers reference: each prompt alone, unpadded
        row = torch.tensor(ids[i][mask[i].astype(bool)][None])
        with torch.no_grad():
            ref = torch_model.generate(row, do_sample=False, max_new_tokens=32, min_new_tokens=32, pad_token_id=0,
                                       eos_token_id=None)[0, n:].numpy()
        np.testing.assert_array_equal(ours[i], ref)


def test_stop_token_and_repetition_penalty(pair):
    torch_model, model = pair
    ids = np.random.RandomState(2).randint(3, model.config.vocab_size, (1, 10))
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor(ids), do_sample=False, max_new_tokens=16, repetition_penalty=1.3,
                                   pad_token_id=0, eos_token_id=None)[0, 10:].numpy()
    stop = int(ref[5])
    first = int(np.argmax(ref == stop))
    ours = model.generate(ids, max_new_tokens=16, repetition_penalty=1.3, eos_token_ids=(stop,), pad_token_id=0)[0]
    np.testing.assert_array_equal(ours[: first + 1], ref[: first + 1])
    assert (ours[first + 1:] == 0).all()


def test_bfloat16_compute_is_close(tmp_path):
    """bf16 compute and storage (the looser check): logits near the fp32 ones, same top token mostly."""
    make_qwen2(tmp_path, hidden=64, heads=4, kv_heads=2, std=0.1)
    ids = np.random.RandomState(5).randint(3, 160, (2, 24))
    ref = lvjax.load(str(tmp_path)).logits(ids)
    bf16 = lvjax.load(str(tmp_path), dtype="bfloat16")
    assert jax.tree.leaves(bf16.params)[0].dtype == jnp.bfloat16
    out = bf16.logits(ids)
    assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
