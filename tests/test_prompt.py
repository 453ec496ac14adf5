"""Chat template, MCQ formatting and `<image>` tokenisation against the recorded original prompt."""

from __future__ import annotations

import numpy as np
import pytest

from lvjax import prompt as P

QUESTION = "What is the person in the video doing?"
OPTIONS = ["Cooking", "Dancing", "Reading", "Swimming"]
TIME_MSG = "\nThe video lasts for 4.00 seconds, and 16 frames are uniformly sampled from it. "


@pytest.fixture(scope="module")
def tok(tiny_vcf_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_vcf_dir)


def test_mcq_text():
    q = P.multiple_choice(QUESTION, OPTIONS)
    assert q == (
        "What is the person in the video doing?\nA. Cooking\nB. Dancing\nC. Reading\nD. Swimming\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_prompt16_text(ref_facts):
    facts = ref_facts["prompt16"]
    assert facts["time_msg"] == TIME_MSG
    text = P.build_prompt(P.multiple_choice(QUESTION, OPTIONS), time_msg=facts["time_msg"])
    assert text == facts["text"]


def test_prompt16_ids(ref, ref_facts, tok):
    text = P.build_prompt(P.multiple_choice(QUESTION, OPTIONS), time_msg=TIME_MSG)
    ids, index = P.tokenize_with_image(text, tok)
    np.testing.assert_array_equal(np.asarray(ids), ref["prompt16/input_ids"])
    assert index == 14 == ref_facts["prompt16"]["image_placeholder_index"]
    assert P.first_conv_length(ids, tok) == 77 == ref_facts["prompt16"]["first_conv_length"]
    assert P.first_conv_length(ids, tok, last=True) == 77
    assert P.assistant_header_ids(tok) == [1018, ref_facts["prompt16"]["assistant_token_id"]]
    # the "\n" after <image> is its own token: nothing merges across the placeholder
    assert ids[index + 1] == tok("\n").input_ids[0]


def test_multi_turn_text():
    text = P.build_prompt("And then?", time_msg=" \nT msg. ", history=[("Q1?", "A1."), ("Q2?", "A2.")])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nT msg. Q1?<|im_end|>\n"
        "<|im_start|>assistant\nA1.<|im_end|>\n"
        "<|im_start|>user\nQ2?<|im_end|>\n"
        "<|im_start|>assistant\nA2.<|im_end|>\n"
        "<|im_start|>user\nAnd then?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert text.count("<image>") == 1


def test_multi_turn_ids(tok):
    text = P.build_prompt("Why?", time_msg=TIME_MSG, history=[("What happens?", "A dance.")])
    ids, index = P.tokenize_with_image(text, tok)
    assert ids.count(P.IMAGE_TOKEN_INDEX) == 1 and ids[index] == P.IMAGE_TOKEN_INDEX
    first, last = P.first_conv_length(ids, tok), P.first_conv_length(ids, tok, last=True)
    assert first < last
    pre = text.split("<image>")[0]
    assert index == len(tok(pre).input_ids)
    # the original's first_conv_length: the assistant header right after the video turn
    user1 = P.render_chatml([("user", P.video_user_turn("What happens?", TIME_MSG))]).split("<image>")[1]
    assert first == index + 1 + len(tok(user1).input_ids)
    assert ids[last:] == P.assistant_header_ids(tok) + tok("\n").input_ids


def test_errors(tok):
    with pytest.raises(ValueError):
        P.tokenize_with_image("no placeholder", tok)
    with pytest.raises(ValueError):
        P.tokenize_with_image("<image><image>", tok)
    with pytest.raises(ValueError):
        P.first_conv_length(tok("hello").input_ids, tok)
    with pytest.raises(ValueError):
        P.render_chatml([("robot", "x")])


class _BosTok:
    """A tokenizer that prepends BOS to every call (llama style): one BOS survives."""

    bos_token_id = 1

    def __call__(self, text):
        class R:
            input_ids = [1] + [ord(c) for c in text]

        return R()


def test_bos_handling():
    assert P.tokenizer_image_token("ab<image>c", _BosTok()) == [1, 97, 98, -200, 99]
