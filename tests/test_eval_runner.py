"""The eval loop with a stand-in model (real PyAV decoding, text from the frames): every task
format end to end, error rows, resume after a kill, process sharding, rescoring, prompts."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from lvjax.config import ConfigError
from lvjax.eval import runner
from lvjax.eval.summary import summary_path
from lvjax.eval.synthetic import make_benchmark
from lvjax.eval.tasks import TASKS, get_task, load_items
from lvjax.video import load_frames

FORMAT_TASKS = ["mlvu_mc", "mvbench", "lvbench", "videomme", "longvideobench", "vnbench", "charades_sta", "synthetic"]


class FrameModel:
    """Decodes the video like the real handle (errors and start/end bounds included) and answers from the
    frames' mean colour; `seen` holds (video, question, start, end, frame indices) per call."""

    family = SimpleNamespace(name="videochat_flash")

    def __init__(self, stop_after=None):
        self.calls, self.stop_after, self.seen = 0, stop_after, []

    def answer(self, video, question, *, fps=None, max_frames=None, min_frames=None, start=None, end=None, **options):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        read = load_frames(video, fps=fps or 1.0, max_num_frames=max_frames or 512, min_num_frames=min_frames or 1,
                           start=start, end=end)
        frames = read.frames
        self.seen.append((os.path.basename(video), question, start, end, read.indices.tolist()))
        value = int(np.asarray(frames, np.int64).sum()) + len(question)
        text = ["A", "(B)", "The answer is C.", "d", "", "1.0 - 2.5"][value % 6]
        return text, {"frames": len(frames), "seconds_read": 0.01 * (value % 7), "new_tokens": 3}


def _strip(path):
    rows = [json.loads(line) for line in open(path)]
    for r in rows:
        r.pop("timing")
    return rows


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {t: (make_benchmark(t, str(root / t), 20, seed=1, broken=True), str(root / t / "videos")) for t in FORMAT_TASKS}


@pytest.mark.parametrize("task", FORMAT_TASKS)
def test_each_format_end_to_end(task, benchmarks, tmp_path):
    ann, videos = benchmarks[task]
    out = str(tmp_path / "r.jsonl")
    summary = runner.evaluate(FrameModel(), task, ann, videos, out, options=runner.answer_options(max_frames=8))
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 20 and [r["index"] for r in rows] == list(range(20))
    assert {"id", "question", "output", "parsed", "answer", "correct", "error", "frames", "timing"} <= set(rows[0])
    n_err = 8 if task == "vnbench" else 2  # VNBench: the missing and the corrupt video carry 4 tries each
    assert summary["errors"] == n_err == sum(r["error"] is not None for r in rows)
    assert any("not found" in r["error"] for r in rows if r["error"]) and any("VideoError" in (r["error"] or "") for r in rows)
    assert all(r["frames"] == 8 for r in rows if not r["error"])  # --max-frames 8 caps (and floors) the sampling
    on_disk = json.load(open(summary_path(out)))
    assert on_disk["accuracy"] == summary["accuracy"] and set(on_disk["groups"]) == set(get_task(task).breakdowns)
    for groups in on_disk["groups"].values():
        assert sum(g["n"] for g in groups.values()) >= on_disk["scored"]  # LVBench items may sit in several types


def test_groups_are_sample_weighted(benchmarks, tmp_path):
    ann, videos = benchmarks["videomme"]
    out = str(tmp_path / "r.jsonl")
    s = runner.evaluate(FrameModel(), "videomme", ann, videos, out)
    for groups in s["groups"].values():
        assert sum(g["n"] for g in groups.values()) == s["scored"]
        assert sum(g["correct"] for g in groups.values()) == round(s["accuracy"] * s["scored"] / 100)
    assert set(s["groups"]["duration"]) == {"short", "medium", "long"}


def test_kill_and_resume_gives_the_uninterrupted_file(benchmarks, tmp_path):
    ann, videos = benchmarks["mlvu_mc"]
    full, cut = str(tmp_path / "full.jsonl"), str(tmp_path / "cut.jsonl")
    runner.evaluate(FrameModel(), "mlvu_mc", ann, videos, full)
    with pytest.raises(KeyboardInterrupt):
        runner.evaluate(FrameModel(stop_after=7), "mlvu_mc", ann, videos, cut)
    assert not os.path.exists(summary_path(cut))
    with open(cut, "a") as f:
        f.write('{"index": 12, "id": "annot')  # a line half-written when the process was killed
    model = FrameModel()
    runner.evaluate(model, "mlvu_mc", ann, videos, cut)
    assert model.calls == 20 - 8  # only the missing items ran (item 0's video is absent: no call; items 1-7 done)
    assert _strip(cut) == _strip(full)
    drop = lambda s: {k: v for k, v in s.items() if k != "results"}  # noqa: E731
    assert drop(json.load(open(summary_path(cut)))) == drop(json.load(open(summary_path(full))))


def test_two_runs_are_identical_but_timings(benchmarks, tmp_path):
    ann, videos = benchmarks["lvbench"]
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    runner.evaluate(FrameModel(), "lvbench", ann, videos, a)
    runner.evaluate(FrameModel(), "lvbench", ann, videos, b)
    assert _strip(a) == _strip(b)


def test_process_shards_merge_in_item_order(benchmarks, tmp_path):
    ann, videos = benchmarks["longvideobench"]
    one, many = str(tmp_path / "one.jsonl"), str(tmp_path / "many.jsonl")
    runner.evaluate(FrameModel(), "longvideobench", ann, videos, one)
    n = 8
    for p in list(range(1, n)) + [0]:  # process 0 merges once every part is done
        model = FrameModel()
        summary = runner.evaluate(model, "longvideobench", ann, videos, many, process=(p, n))
        assert model.calls == len(range(p, 20, n)) - (p == 0)  # item 0's video is absent: no call
        assert (summary is None) == (p != 0)
    assert _strip(many) == _strip(one)
    assert not [f for f in os.listdir(tmp_path) if ".part-" in f]


def test_rescore_reparses_outputs(benchmarks, tmp_path):
    ann, videos = benchmarks["mlvu_mc"]
    out, again, xl2 = (str(tmp_path / f) for f in ("r.jsonl", "again.jsonl", "xl2.jsonl"))
    first = runner.evaluate(FrameModel(), "mlvu_mc", ann, videos, out)
    same = runner.rescore("mlvu_mc", ann, out, again, "videochat_flash")
    assert _strip(again) == _strip(out) and same["accuracy"] == first["accuracy"]
    runner.rescore("mlvu_mc", ann, out, xl2, "video_xl2")
    rows = {r["id"]: r for r in _strip(xl2)}
    assert rows["annotations/3"]["output"] == _strip(out)[3]["output"]
    parsed = [r["parsed"] for r in rows.values() if r["output"] == "(B)"]
    assert parsed and set(parsed) == {"B"}  # Video-XL-2's rule: the character before the first ")"


def test_wrong_results_file_is_refused(benchmarks, tmp_path):
    out = str(tmp_path / "r.jsonl")
    runner.evaluate(FrameModel(), "mlvu_mc", *benchmarks["mlvu_mc"], out)
    with pytest.raises(ConfigError, match="not in these annotations"):
        runner.evaluate(FrameModel(), "videomme", *benchmarks["videomme"], out)


def test_summary_rules_skip_empty_and_vnbench_tries():
    from lvjax.eval.summary import summarize

    row = lambda i, correct, output="A", unit="": dict(id=str(i), correct=correct, output=output, error=None,  # noqa: E731
                                                       groups={"g": "x"}, unit=unit, parsed=None, answer="A")
    rows = [row(0, True), row(1, False, ""), row(2, False)]
    assert summarize(rows, task="mlvu_mc", protocol="p", skip_empty=True, breakdowns=["g"])["accuracy"] == 50.0
    assert summarize(rows, task="videomme", protocol="p", skip_empty=False, breakdowns=["g"])["accuracy"] == pytest.approx(100 / 3, abs=1e-3)
    tries = [row(0, True, unit="v0"), row(1, True, unit="v0"), row(2, True, unit="v1"), row(3, False, unit="v1")]
    s = summarize(tries, task="vnbench", protocol="p", skip_empty=False, breakdowns=["g"])
    assert (s["accuracy"], s["scored"]) == (50.0, 2)


def test_prompts_follow_the_originals(benchmarks):
    mlvu = load_items(get_task("mlvu_mc"), benchmarks["mlvu_mc"][0])[0]
    opts = "".join(f"({L}) {o}\n" for L, o in zip("ABCD", mlvu.options))
    post = "Answer with the option's letter from the given choices directly."
    assert TASKS["mlvu_mc"].rule("videochat_flash").prompt(mlvu) == f"Question:{mlvu.question}\nOption:\n{opts}{post}"
    assert TASKS["mlvu_mc"].rule("video_xl2").prompt(mlvu) == (
        f"\n{mlvu.question}\n{opts.rstrip()}\nOnly give the best option.\n\nBest option: (")
    mvb = load_items(get_task("mvbench"), benchmarks["mvbench"][0])[0]
    assert TASKS["mvbench"].rule("videochat_flash").prompt(mvb) == (  # the fork's mvbench_<task>.yaml post_prompt
        f"Question: {mvb.question}\nOption:\n" + "".join(f"({L}) {o}\n" for L, o in zip("ABCD", mvb.options))
        + "\nOnly give the best option.")
    vme = load_items(get_task("videomme"), benchmarks["videomme"][0])[0]
    assert vme.options[0].startswith("A. ")
    assert TASKS["videomme"].rule("videochat_flash").prompt(vme) == (
        "These are the frames of a video. Select the best answer to the following multiple-choice question based on "
        "the video. Respond with only the letter (A, B, C, or D) of the correct option.\nQuestion: "
        f"{vme.question}\nOption:\n" + "\n".join(vme.options) + f"\n{post}")
    lvb = load_items(get_task("longvideobench"), benchmarks["longvideobench"][0])[0]
    assert TASKS["longvideobench"].rule("videochat_flash").prompt(lvb) == (
        lvb.question + "\n" + "\n".join(f"({L}). {o}" for L, o in zip("ABCDE", lvb.options)) + f"\n{post}\n")
    lvbench = load_items(get_task("lvbench"), benchmarks["lvbench"][0])[0]
    assert len(lvbench.options) == 4 and "(A)" not in lvbench.question
    vn = load_items(get_task("vnbench"), benchmarks["vnbench"][0])
    assert [it.id for it in vn[:5]] == ["vid_000_0", "vid_000_1", "vid_000_2", "vid_000_3", "vid_001_0"]
    assert TASKS["vnbench"].rule("video_xl").prompt(vn[0]).startswith(f"Question: {vn[0].question}\nOptions:\n(A) ")


def test_json_and_parquet_rows_of_videomme_read_alike(benchmarks, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = json.load(open(benchmarks["videomme"][0]))
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "test-00000-of-00001.parquet"))
    with open(tmp_path / "rows.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    task = get_task("videomme")
    ref = load_items(task, benchmarks["videomme"][0])
    assert load_items(task, str(tmp_path / "test-00000-of-00001.parquet")) == ref
    assert load_items(task, str(tmp_path / "rows.jsonl")) == ref


def test_bad_annotations_name_the_file(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text('[{"video": "x.mp4", "question": "q", "candidates": ["a", "b"], "answer": "c"}]')
    with pytest.raises(ConfigError, match=r"a record 0: answer 'c' is not one of the candidates"):
        load_items(get_task("mlvu_mc"), str(bad))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="a.json: not valid JSON"):
        load_items(get_task("mlvu_mc"), str(bad))
    with pytest.raises(ConfigError, match="missing field 'videoID'"):
        load_items(get_task("videomme"), str(tmp_path / "a.json") if bad.write_text('[{"question_id": "1"}]') else "")
