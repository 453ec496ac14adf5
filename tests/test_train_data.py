"""Training data: JSONL → grain iterator with PyAV frames, answer-only labels, exact resume, bad samples."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lvjax.prompt import build_prompt
from lvjax.train import synthetic
from lvjax.train.config import DataSection
from lvjax.train.data import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    TrainIterator,
    chat_segments,
)


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    tok = synthetic.make_tokenizer(str(d / "tok"))
    jsonl = synthetic.make_video_qa(str(d / "data"), 10, corrupt=1, missing=1)
    return {"tok": tok, "jsonl": jsonl, "root": str(d / "data")}


def _data(qa, **kw) -> DataSection:
    base = {"train_jsonl": qa["jsonl"], "media_root": qa["root"], "tokenizer": qa["tok"], "fps": 8.0,
            "local_num_frames": 4, "min_frames": 8, "max_frames": 32, "frame_buckets": [16, 32], "image_size": 32,
            "max_seq_len": 96, "num_epochs": None}
    base.update(kw)
    return DataSection(**base)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_example_layout_and_answer_only_labels(qa):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qa["tok"])
    it = TrainIterator(_data(qa, shuffle=False), 2)
    b = next(it)
    assert b["input_ids"].shape == (2, 96) and b["frames"].shape[0] == 2 and b["frames"].shape[2:] == (32, 32, 3)
    assert b["frames"].dtype == np.uint8 and b["frames"].shape[1] in (16, 32)
    with open(qa["jsonl"]) as f:
        records = [json.loads(line) for line in f]
    for row in range(2):
        ids, labels, valid = b["input_ids"][row], b["labels"][row], b["valid"][row]
        assert (ids == IMAGE_TOKEN_INDEX).sum() == 1
        answer = records[row]["conversations"][1]["value"]
        assert tok.decode(labels[labels != IGNORE_INDEX]) == answer + "<|im_end|>"
        assert np.all(labels[~valid] == IGNORE_INDEX)
        n = int(b["n_frames"][row])
        assert n % 4 == 0 and 8 <= n <= 32 and b["frame_valid"][row].sum() == n
        assert np.all(b["frames"][row, n:] == 0) and b["frames"][row, :n].max() > 0
        text = tok.decode(ids[(ids >= 0) & valid])
        assert "The video lasts for" in text and f"{n} frames are uniformly sampled" in text


def test_prompt_is_the_inference_prompt():
    segs = chat_segments([{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}],
                         "The video lasts for 2.00 seconds, and 16 frames are uniformly sampled from it.",
                         "You are a helpful assistant.")
    prompt = "".join(t for t, _ in segs[:2])
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
                      "The video lasts for 2.00 seconds, and 16 frames are uniformly sampled from it. What is it?"
                      "<|im_end|>\n<|im_start|>assistant\n")
    ref = build_prompt("What is it?", time_msg="\nThe video lasts for 2.00 seconds, and 16 frames are uniformly sampled from it. ")
    assert ref == prompt


def test_iterator_resumes_at_exactly_the_next_example(qa):
    data = _data(qa)
    it = TrainIterator(data, 3)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    it2 = TrainIterator(data, 3)
    it2.set_state(state)
    got = [next(it2) for _ in range(3)]
    assert all(_same(a, b) for a, b in zip(expected, got))


@pytest.mark.heavy  # CI time (20-minute budget); `make test-all` runs it
def test_worker_processes_give_the_same_stream_and_resume(qa):
    ref = TrainIterator(_data(qa), 2)
    ref_batches = [next(ref) for _ in range(4)]
    it = TrainIterator(_data(qa, worker_count=1), 2)
    got = [next(it) for _ in range(2)]
    state = it.get_state()
    assert all(_same(a, b) for a, b in zip(ref_batches[:2], got))
    it2 = TrainIterator(_data(qa, worker_count=1), 2)
    it2.set_state(state)
    assert all(_same(a, next(it2)) for a in ref_batches[2:])


def test_bad_videos_are_skipped_and_counted(qa, caplog):
    data = _data(qa, shuffle=False, num_epochs=1)
    with caplog.at_level(logging.WARNING, logger="lvjax.train.data"):
        it = TrainIterator(data, 1)
        batches = list(it)
    assert len(batches) == 10  # 12 records, the corrupt and the missing one skipped
    assert it.skipped == 2 and it.get_state()["skipped"] == 2
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "corrupt0.mp4" in msgs and "missing0.mp4" in msgs


def test_hosts_read_disjoint_parts(qa):
    data = _data(qa, num_epochs=1)
    seen = []
    for p in range(2):
        it = TrainIterator(data, 1, process_index=p, process_count=2)
        seen.append({b["input_ids"][0].tobytes() + b["frames"][0].tobytes() for b in it})
    assert not seen[0] & seen[1]
    assert len(seen[0]) + len(seen[1]) == 10


def test_text_only_records_are_skipped_when_the_objective_needs_video(qa, tmp_path):
    with open(qa["jsonl"]) as f:
        lines = f.read().splitlines()
    text_only = {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([json.dumps(text_only), lines[0], lines[1]]) + "\n")
    data = _data(qa, train_jsonl=str(path), shuffle=False, num_epochs=1)
    it = TrainIterator(data, 1, require_media=True)
    assert len(list(it)) == 2 and it.skipped == 1
    it = TrainIterator(data, 1)  # the text objective keeps it (no frames, no <image>)
    batches = list(it)
    assert len(batches) == 3 and batches[0]["n_frames"][0] == 0 and not (batches[0]["input_ids"] == -200).any()
