"""The NIAH generator: needles land at the requested frames (decoded with PyAV), questions are
well formed, and the niah task writes its depth × length heatmap."""

import json

import numpy as np
import pytest

from lvjax.eval import runner
from lvjax.eval.niah import make_niah
from tests.test_eval_runner import FrameModel
from tests.videos import decode_all


@pytest.fixture(scope="module")
def niah(tmp_path_factory):
    out = tmp_path_factory.mktemp("niah")
    ann = make_niah(str(out), 8, seed=3, frames=32, depths=(0.0, 0.5, 1.0), lengths=(1, 3), hops=(1, 3))
    return out, json.load(open(ann))


def test_needles_land_at_the_requested_frames(niah):
    out, rows = niah
    for r in rows:
        frames = decode_all(out / "videos" / r["video"])
        assert len(frames) == 32
        chain = r["needle_frames"]
        assert len(chain) == r["hops"] and all(len(c) == r["needle_len"] for c in chain)
        assert chain[-1][0] == round(r["depth"] * (32 - r["needle_len"]))  # the answer needle sits at the depth
        flat = [k for c in chain for k in c]
        assert len(set(flat)) == len(flat)
        white = [k for k, f in enumerate(frames) if (f.astype(int).min(-1) > 200).mean() > 0.5]  # needles are mostly white
        assert white == sorted(flat)
        for c in chain:  # a needle clip repeats one image
            assert all(np.abs(frames[k].astype(int) - frames[c[0]].astype(int)).mean() < 4 for k in c)


def test_questions_are_well_formed(niah):
    _, rows = niah
    assert {r["hops"] for r in rows} == {1, 3} and {r["needle_len"] for r in rows} == {1, 3}
    for r in rows:
        assert len(r["candidates"]) == 4 == len(set(r["candidates"])) and r["answer"] in r["candidates"]
        assert r["question_type"] == ("single_hop" if r["hops"] == 1 else "multi_hop")
        assert ("START" in r["question"]) == (r["hops"] > 1)


def test_niah_task_writes_the_heatmap(niah, tmp_path):
    pytest.importorskip("matplotlib")
    out, _ = niah
    res = str(tmp_path / "niah.jsonl")
    summary = runner.evaluate(FrameModel(), "niah", str(out / "annotations.json"), str(out / "videos"), res)
    assert summary["heatmap"] == "niah.niah.png"
    assert (tmp_path / "niah.niah.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["groups"]) == {"depth", "needle_len", "hops"}
