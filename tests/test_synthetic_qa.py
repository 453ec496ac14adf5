"""The synthetic long-video QA benchmark: answers readable from the frames, not from the question."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from lvjax import synthetic_qa as sq
from lvjax.eval import render
from lvjax.eval.tasks import get_task, load_items


def _midpoints(frames: np.ndarray) -> np.ndarray:
    """The frames a uniform 8-frame sampling sees: one per bin (a plain loop, independent of the renderer)."""
    per = len(frames) // sq.BINS
    return np.stack([frames[b * per + per // 2] for b in range(sq.BINS)])


def _has(img: np.ndarray, rgb) -> bool:
    return bool(np.any(np.all(img == np.asarray(rgb, np.uint8), axis=-1)))


def _oracle(qtype: str, frames: np.ndarray) -> str:
    """Answer from the sampled frames by looking at pixels."""
    seen = _midpoints(frames)
    if qtype == "needle":
        return next(c for c in sq.NEEDLE_COLOURS if any(_has(f, render.COLOURS[c]) for f in seen))
    if qtype == "count":
        return str(sum(int(np.all(f == 240)) for f in seen))
    if qtype == "order":
        first = {c: min(i for i, f in enumerate(seen) if _has(f, render.COLOURS[c])) for c in sq.ORDER_COLOURS}
        return min(first, key=first.get)
    green = np.argwhere(np.all(seen[-1] == np.asarray(render.COLOURS["green"], np.uint8), axis=-1))
    (y0, x0), (y1, x1) = green.min(0), green.max(0)
    side = {"left": x0 == 0, "right": x1 == sq.SIZE - 1, "top": y0 == 0, "bottom": y1 == sq.SIZE - 1}
    assert sum(side.values()) == 1, side
    return next(k for k, v in side.items() if v)


@pytest.mark.parametrize("qtype", sq.TYPES)
def test_answer_is_in_the_sampled_frames(qtype):
    for i in range(6):
        frames, answer = sq.render_item(qtype, np.random.RandomState([7, i]))
        assert frames.shape[1:] == (sq.SIZE, sq.SIZE, 3) and len(frames) in sq.LENGTHS
        assert _oracle(qtype, frames) == answer, (qtype, i)


def test_render_is_deterministic_and_seeds_differ():
    a, ans_a = sq.render_item("count", np.random.RandomState([1, 5]))
    b, ans_b = sq.render_item("count", np.random.RandomState([1, 5]))
    np.testing.assert_array_equal(a, b)
    assert ans_a == ans_b
    assert len(set(sq.SPLIT_SEEDS.values())) == len(sq.SPLIT_SEEDS)


def test_answers_are_balanced_so_the_question_alone_gives_chance():
    """Over 160 draws per type, the most frequent answer is near 1/k: the question text cannot beat chance."""
    for qtype in sq.TYPES:
        answers = collections.Counter(sq.render_item(qtype, np.random.RandomState([9, i]))[1] for i in range(160))
        assert set(answers) == set(sq.ANSWERS[qtype])
        top = max(answers.values()) / 160
        assert top < sq.CHANCE[qtype] + 0.12, (qtype, answers)
    assert sq.CHANCE == {"needle": 0.25, "count": 0.25, "order": 0.5, "position": 0.25}


def test_split_annotations_and_training_records(tmp_path):
    path = sq.make_split(str(tmp_path), "val", 8)
    rows = json.load(open(path))
    assert [r["question_type"] for r in rows] == list(sq.TYPES) * 2
    items = load_items(get_task("synthetic_qa"), path)
    assert items[0].options == sq.NEEDLE_COLOURS and items[0].answer in "ABCD"
    assert items[1].options == () and items[1].answer in sq.COUNTS
    # item i of a split does not depend on how many items were written
    again = json.load(open(sq.make_split(str(tmp_path / "b"), "val", 3)))
    assert again == rows[:3]
    jsonl = sq.training_jsonl(path, str(tmp_path / "train.jsonl"))
    recs = [json.loads(line) for line in open(jsonl)]
    rule = get_task("synthetic_qa").rule("videochat_flash")
    assert recs[0]["conversations"][0]["value"] == "<image>\n" + rule.prompt(items[0])
    assert recs[0]["conversations"][1]["value"] == items[0].answer
    assert recs[3]["conversations"][1]["value"] == rows[3]["answer"]  # short answer: the word itself


def test_short_answer_rule():
    task = get_task("synthetic_qa")
    rule = task.rule("videochat_flash")
    item = load_items_from([{"video": "v", "question": "Where?", "candidates": [], "answer": "left",
                             "question_type": "position"}])[0]
    assert rule.prompt(item) == "Question:Where?\nAnswer with a single word or number."
    assert task.correct(rule.parse("Left.", item), item)
    assert not task.correct(rule.parse("right", item), item)
    mc = load_items_from([{"video": "v", "question": "Which?", "candidates": ["red", "blue"], "answer": "blue",
                           "question_type": "order"}])[0]
    assert mc.answer == "B" and task.correct(rule.parse("B", mc), mc)


def load_items_from(records):
    return get_task("synthetic_qa").items([("mem", r) for r in records])
