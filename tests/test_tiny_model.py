"""The shipped tiny model: its folder, its accuracy on a fixed held-out set, the demo, and its training."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lvjax import shipped
from lvjax import synthetic_qa as sq
from lvjax import tiny_model as tm

HELD_OUT = 80  # the first 80 test items, 20 per question type
# The goal (issue #16): chance + half the way to 100 % on every type (62.5 % for 4 answers, 75 % for 2).
GOAL = {t: 100 * (sq.CHANCE[t] + (1 - sq.CHANCE[t]) / 2) for t in sq.TYPES}
# Measured (%, deterministic greedy decoding, 8 frames; docs/tiny_model.md): `tiny` with LP-Comp
# (xcomp_cosine) needle 100, count 100, order 75, position 100; `tiny-base` without compression
# 100, 100, 95, 95. Both reach the goal on every type (tiny's order exactly at it: 15 of 20).


def test_shipped_folders_are_small_original_format():
    for name in shipped.NAMES:
        folder = shipped.resolve(name)
        assert os.path.dirname(folder) == str(shipped.ASSETS)
        files = set(os.listdir(folder))
        assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= files
        config = json.load(open(os.path.join(folder, "config.json")))
        assert config["model_type"] == "videochat_flash_qwen" and config["mm_projector_type"] == "tome16_mlp_hd64"
    total = sum(os.path.getsize(os.path.join(shipped.ASSETS, n, f))
                for n in shipped.NAMES for f in os.listdir(shipped.resolve(n)))
    assert total <= 10 * 2 ** 20, total
    assert shipped.resolve("some/other/path") == "some/other/path"


def test_load_by_name():
    import lvjax

    model = lvjax.load("tiny")
    assert model.source == str(shipped.ASSETS / "tiny")
    assert model.info()["family"] == "videochat_flash"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("tiny_eval"))
    cells = (tm.Cell("tiny, LP-Comp", "tiny", 8, "xcomp_cosine"), tm.Cell("tiny-base, none", "tiny-base", 8))
    return {cell.model: s for cell, s in tm.compare(work, HELD_OUT, cells)}


@pytest.mark.parametrize("name", ["tiny", "tiny-base"])
@pytest.mark.heavy
def test_accuracy_per_question_type(held_out, name):
    """Per-type accuracy on the fixed held-out set ≥ the goal (the measured figures are above GOAL)."""
    groups = held_out[name]["groups"]["question_type"]
    for t in sq.TYPES:
        assert groups[t]["n"] == HELD_OUT // len(sq.TYPES)
        got = groups[t]["accuracy"]
        assert got >= GOAL[t], (name, t, got, GOAL[t])


def test_demo_answers_fresh_videos_with_the_shipped_model(tmp_path, capsys):
    from lvjax import demo

    # the fresh videos are new: not items of any split
    for split, seed in sq.SPLIT_SEEDS.items():
        a, _ = sq.render_item("needle", np.random.RandomState([seed, 0]))
        b, _ = sq.render_item("needle", np.random.RandomState([demo.DEMO_SEED, 0]))
        assert a.shape != b.shape or not np.array_equal(a, b)
    assert demo.main(["--workdir", str(tmp_path), "--n", "0"]) == 0  # `make demo` without the held-out scoring
    out = capsys.readouterr().out
    answers = [line.split() for line in out.splitlines() if line.strip().startswith("answer ")]
    assert len(answers) == 2 * len(sq.TYPES) and all(a[1] != "''" for a in answers), out  # 2 fresh videos per type
    assert all(f"{t} (" in out for t in sq.TYPES) and "shipped tiny model" in out
    assert "accuracy on the first" not in out


@pytest.mark.heavy  # CI time: compiles LP-Comp and QC-Comp (~90 s); both paths are checked in CI elsewhere
def test_demo_scores_held_out_items_per_setting(tmp_path, capsys):
    from lvjax import demo

    assert demo.main(["--workdir", str(tmp_path), "--n", "4"]) == 0  # one held-out item per type
    out = capsys.readouterr().out
    assert "accuracy on the first 4 held-out" in out and "QC-Comp" in out and "chance" in out
    assert "LP-Comp" in out and "no compression" in out


def _small_data(work: str, n: int = 16) -> None:
    from lvjax.testing.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(os.path.join(work, "tokenizer"), vocab_size=tm.VOCAB, corpus=sq.corpus())
    path = sq.make_split(os.path.join(work, "data"), "train", n)
    sq.training_jsonl(path, os.path.join(work, "data", "train.jsonl"))


@pytest.mark.heavy  # CI time: the training loop is covered by test_train_loop (kill / resume, pretrained start)
def test_short_training_lowers_the_loss(tmp_path):
    from lvjax.train.config import load_config
    from lvjax.train.loop import train

    work = str(tmp_path)
    _small_data(work)
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny_trained.yaml"), [
        f"data.train_jsonl={work}/data/train.jsonl", f"data.media_root={work}/data/videos",
        f"data.tokenizer={work}/tokenizer", f"train.output_dir={work}/run", "train.steps=8", "train.log_every=1",
        "train.progress=false", "optim.warmup_ratio=0.0"])
    losses = [s["loss"] for s in train(cfg, verbose=False)["steps"]]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < losses[0] - 0.5, losses


@pytest.mark.heavy
def test_build_reproduces_the_shipped_weights(tmp_path):
    """`make train-tiny` from its seeds gives byte-identical safetensors (measured 2,797 s beside a second build on the 2-core CPU)."""
    from safetensors.numpy import load_file

    tm.build(str(tmp_path / "work"), str(tmp_path / "out"))
    for name in shipped.NAMES:
        new = load_file(str(tmp_path / "out" / name / "model.safetensors"))
        old = load_file(os.path.join(shipped.resolve(name), "model.safetensors"))
        assert sorted(new) == sorted(old)
        for k in old:
            np.testing.assert_array_equal(new[k], old[k], err_msg=f"{name}: {k}")
