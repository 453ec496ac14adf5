"""The offline tiny Qwen2-style tokenizer: loads with AutoTokenizer, round-trips, deterministic."""

from __future__ import annotations

import json

import pytest

from lvjax import prompt as P
from lvjax.testing.tiny import SPECIAL_TOKENS, build_tiny_tokenizer

TEXTS = [
    P.build_prompt(P.multiple_choice("What is the person in the video doing?", ["Cooking", "Dancing", "Reading"]),
                   time_msg="\nThe video lasts for 4.00 seconds, and 16 frames are uniformly sampled from it. ",
                   history=[("Describe the video.", "A man is cooking.")]),
    "Café naïve — 中文视频、日本語 ελληνικά 🙂 emoji",
    "  leading spaces, tabs\tand\n\n\nnewlines\r\n  trailing  ",
    "It's 3600.00 seconds; 1024 frames! (x+y)=z <|im_end|>",
    "unseen words: zyzzyva quixotic Xylophone",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_tok")
    return build_tiny_tokenizer(d / "a", vocab_size=512), d


@pytest.fixture(scope="module")
def tok(built):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(built[0].path)


def test_loads_and_special_ids(built, tok):
    info = built[0]
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert info.vocab_size == len(tok) <= 512
    assert (info.endoftext_id, info.im_start_id, info.im_end_id) == tuple(range(info.vocab_size - 3, info.vocab_size))
    for s, i in info.special_ids.items():
        assert tok(s).input_ids == [i] and tok.convert_tokens_to_ids(s) == i
    assert tok.eos_token_id == info.im_end_id and tok.pad_token_id == info.endoftext_id and tok.bos_token_id is None
    assert tok("<|im_start|>user\nhi<|im_end|>").input_ids[0] == info.im_start_id
    cfg = json.loads((built[1] / "a" / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer" and cfg["eos_token"] == "<|im_end|>"


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, built, text):
    from tokenizers import Tokenizer

    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    raw = Tokenizer.from_file(str(built[1] / "a" / "tokenizer.json"))
    assert raw.encode(text).ids == ids  # transformers uses the written pipeline as is
    assert all(0 <= i < len(tok) for i in ids)


def test_byte_level_layout(built):
    vocab = json.loads((built[1] / "a" / "vocab.json").read_text())
    assert vocab["!"] == 0 and vocab["Ġ"] == 220 and vocab["Ċ"] == 198  # GPT-2 / Qwen2 byte ids
    merges = (built[1] / "a" / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(vocab) <= 256 + len(merges) - 1
    assert not any(s in vocab for s in SPECIAL_TOKENS)


def test_prompt_structure(tok):
    ids, index = P.tokenize_with_image(TEXTS[0], tok)
    assert ids[index] == P.IMAGE_TOKEN_INDEX
    assert P.first_conv_length(ids, tok) < P.first_conv_length(ids, tok, last=True)
    assert len(tok("assistant", add_special_tokens=False).input_ids) == 1


def test_deterministic(built, tmp_path):
    info = build_tiny_tokenizer(tmp_path / "b", vocab_size=512)
    assert info.vocab_size == built[0].vocab_size
    a_dir = built[1] / "a"
    names = sorted(p.name for p in a_dir.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (a_dir / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bad_size(tmp_path):
    with pytest.raises(ValueError):
        build_tiny_tokenizer(tmp_path, vocab_size=100)
