"""Subtitles (Video-MME `.srt`, LongVideoBench JSON) and MVBench/MLVU start/end bounds: the lines and
frames chosen match the originals' rules, written out below as plain loops, and `lvjax eval
--subtitles` runs end to end on the generated benchmarks (a malformed file is an error item)."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
from test_eval_runner import FrameModel

import lvjax
from lvjax.cli import main
from lvjax.config import ConfigError
from lvjax.eval import runner, subtitles
from lvjax.eval.synthetic import make_benchmark
from lvjax.eval.tasks import get_task, load_items

FONT = r'<font color="white" size=".72c">(.*?)</font>'


# ----------------------------------------------------------------------------- the originals' rules


def _srt_seconds(time_str):
    """lmms_eval/tasks/videomme/utils.py `parse_subtitle_time`."""
    h, m, s_ms = time_str.split(":")
    s, ms = s_ms.split(",")
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def reference_videomme_at_frames(srt_text, fps, total_frame, frame_num):
    """lmms_eval/tasks/videomme/utils.py (EvolvingLMMs-Lab/lmms-eval; the same in Video-XL-2/eval/lvu):
    `load_subtitles`, `extract_subtitles` and the `frame_num` branch of `videomme_doc_to_text_subtitle`.
    The original iterates `list(set(indices))`; sorted here (what CPython gives for small index sets)."""
    subs = {}
    for section in srt_text.split("\n\n"):
        if section.strip():
            lines = section.split("\n")
            if len(lines) >= 3:
                a, b = lines[1].split(" --> ")
                subs[(_srt_seconds(a), _srt_seconds(b))] = " ".join(lines[2:])
    by_frame = [(int(a * fps), int(b * fps), text) for (a, b), text in subs.items()]
    chosen = []
    for frame_idx in np.linspace(0, total_frame - 1, frame_num, dtype=int).tolist():
        for idx, title in enumerate(by_frame):
            if frame_idx < title[1] and frame_idx >= title[0]:
                chosen.append(idx)
    texts = []
    for idx in sorted(set(chosen)):
        raw = re.findall(FONT, by_frame[idx][2])
        if raw:
            texts.append(raw[0])
    return "\n".join(texts)


def reference_videomme_full(path):
    """OpenGVLab/VideoChat-Flash lmms-eval_videochat/lmms_eval/tasks/videomme/utils.py, the
    `gemini_api_flag == "full subtitle"` branch its `videomme_w_subtitle.yaml` selects."""
    texts = []
    for ele in open(path).readlines():
        matches = re.findall(FONT, ele)
        if matches:
            texts.append(matches[0])
    return "\n".join(texts)


def reference_lvb(entries, duration, offset, max_num_frames=512):
    """OpenGVLab/VideoChat-Flash lmms-eval_videochat/lmms_eval/tasks/longvideobench/utils.py:
    `compute_frame_timestamps(duration, 512)` and `insert_subtitles_into_frames(..., add_image=False)`."""
    if duration > max_num_frames:
        frame_timestamps = [duration / max_num_frames * i for i in range(max_num_frames)]
    else:
        frame_timestamps = [i for i in range(int(duration))]
    out = []
    for sub in entries:
        if "timestamp" in sub:
            start, end = sub["timestamp"]
            if not isinstance(end, float):
                end = duration
            start -= offset
            end -= offset
            middle = (start + end) / 2
            text = sub["text"]
        else:
            h, m, s = sub["start"].split(":")
            start = int(h) * 3600 + int(m) * 60 + float(s) - offset
            h, m, s = sub["end"].split(":")
            end = int(h) * 3600 + int(m) * 60 + float(s) - offset
            middle = (start + end) / 2
            text = sub["line"]
        if end - start < 1:
            end = middle + 0.5
            start = middle - 0.5
        covering = False
        for t in frame_timestamps:
            if t < end and t > start:
                covering = True
                break
        if covering:
            out.append(text)
    return "\n".join(out)


def reference_bounded_indices(vlen, fps, start, end, target_fps, L, min_nf, max_nf):
    """llava-train_videochat/llava/video_utils.py (VideoChat-Flash): `read_frames_decord` with `clip`, then
    `get_frame_indices(sample="middle", dynamic fps)` on the clipped length, shifted by its first frame."""
    duration = vlen / float(fps)
    start = max(0, start)
    end = min(duration - 0.1, end)
    duration = end - start
    n = int(duration * fps)
    first = int(start * fps)
    if L > n:
        idx = [i * n // L for i in range(L)]
    else:
        if min_nf > n:
            min_nf = (n // L) * L
        segs = int(target_fps * (n / fps) // L)
        nf = L * segs if segs else L
        nf = min(nf, max_nf) if max_nf > 0 else nf
        if nf > n:
            nf = (n // L) * L
        nf = max(min_nf, nf)
        edges = np.linspace(0, n, min(nf, n) + 1).astype(int)
        idx = [(edges[k] + edges[k + 1] - 1) // 2 for k in range(min(nf, n))]
        idx += [idx[-1]] * (nf - len(idx))
    return [int(i) + first for i in idx]


# ----------------------------------------------------------------------------- generated inputs


def _hms(t, sep=","):
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def _random_srt(rng, n=40):
    """Cues at distinct times (some with two tagged lines, some untagged, some between frames)."""
    sections, t = [], 0.0
    for k in range(n):
        t += float(rng.uniform(0.0, 3.0))
        length = float(rng.choice([0.02, 0.3, 1.0, 2.5, 6.0]))
        kind = k % 4
        text = {0: f'<font color="white" size=".72c">line {k}</font>',
                1: f'<font color="white" size=".72c">line {k}a</font>\n<font color="white" size=".72c">{k}b</font>',
                2: f"plain {k}",
                3: f'<font color="white" size=".72c">line {k}</font>\n(applause)'}[kind]
        sections.append(f"{k + 1}\n{_hms(t)} --> {_hms(t + length)}\n{text}\n")
    return "\n".join(sections), t + 10.0


@pytest.mark.parametrize("fps,frame_num", [(29.97, 32), (25.0, 128), (4.0, 8)])
def test_videomme_lines_at_frames_follow_lmms_eval(tmp_path, fps, frame_num):
    rng = np.random.RandomState(frame_num)
    text, duration = _random_srt(rng)
    path = tmp_path / "v.srt"
    path.write_text(text)
    total = int(duration * fps)
    cues = subtitles.read_srt(str(path))
    got = subtitles.videomme_at_frames(cues, subtitles.uniform_frames(total, frame_num), fps)
    assert got == reference_videomme_at_frames(text, fps, total, frame_num)
    assert got and "plain" not in got and "(applause)" not in got
    assert subtitles.videomme_full(cues) == reference_videomme_full(str(path))


@pytest.mark.parametrize("duration,offset", [(30.0, 0.0), (45.5, 7.5), (1200.0, 3.0)])
def test_lvb_lines_follow_the_fork(tmp_path, duration, offset):
    rng = np.random.RandomState(int(duration))
    entries, t = [], offset
    for k in range(60):
        t += float(rng.uniform(0.0, duration / 40))
        length = float(rng.choice([0.1, 0.6, 1.0, 3.0]))
        end = [t + length, None, int(t + length), t + length][k % 4]  # None and integer ends mean the video's end
        if k % 5 == 4:
            entries.append({"start": _hms(t, "."), "end": _hms(t + length, "."), "line": f"line {k}"})
        else:
            entries.append({"timestamp": [round(t, 3), end if not isinstance(end, float) else round(end, 3)],
                            "text": f"text {k}"})
    entries += [{"timestamp": [offset - 5.0, offset - 4.0], "text": "before"},  # outside the frame times
                {"timestamp": [offset + duration + 1.0, offset + duration + 2.0], "text": "after"},
                {"timestamp": [offset + 2.2, offset + 2.4], "text": "between"}]  # 1 s around 2.3: (1.8, 2.8) holds 2
    path = tmp_path / "s_en.json"
    path.write_text(json.dumps(entries))
    got = subtitles.lvb_select(subtitles.read_lvb(str(path), duration), subtitles.lvb_frame_times(duration), offset)
    assert got == reference_lvb(entries, duration, offset)
    assert "text 0" in got and "before" not in got and "after" not in got and "between" in got
    assert subtitles.lvb_path("/s", "abc.json") == "/s/abc_en.json" == subtitles.lvb_path("/s", "abc_en.json")


def test_malformed_subtitle_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.srt"
    bad.write_text("1\n00:00:01,000 --> 00:00:02,000\nfine\n\n2\n00:00:0x,000 --> 00:00:03,000\nbroken\n")
    with pytest.raises(ConfigError, match=r"bad\.srt: malformed SubRip \(\.srt\) subtitle file: no valid cue at line 5"):
        subtitles.read_srt(str(bad))
    for text, message in [("{oops", "not valid JSON"), ('{"a": 1}', "expected a JSON list"),
                          ('[{"timestamp": [1.0]}]', r"subtitle 0: expected"),
                          ('[{"start": "1:2", "end": "0:0:1", "line": "x"}]', "is not HH:MM:SS.fff")]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ConfigError, match=r"bad\.json.*" + message):
            subtitles.read_lvb(str(tmp_path / "bad.json"), 10.0)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def subtitled(tmp_path_factory):
    root = tmp_path_factory.mktemp("subs")
    return {t: (make_benchmark(t, str(root / t), 20, seed=1, broken=True), str(root / t / "videos"),
                str(root / t / "subtitles")) for t in ("videomme", "longvideobench", "mvbench")}


def _rows(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.parametrize("protocol", ["videochat_flash", "video_xl2"])
def test_videomme_with_subtitles_end_to_end(subtitled, tmp_path, protocol):
    ann, videos, subs = subtitled["videomme"]
    out = str(tmp_path / "r.jsonl")
    model = FrameModel()
    summary = runner.evaluate(model, "videomme", ann, videos, out, protocol=protocol, subtitles=subs)
    rows = _rows(out)
    assert summary["errors"] == 3 and rows[2]["error"] == (
        f"ConfigError: {subs}/vid_002.srt: malformed SubRip (.srt) subtitle file: no valid cue at line 1 ('1' …)")
    rule = get_task("videomme").rule(protocol)
    for row, item in zip(rows, load_items(get_task("videomme"), ann)):
        if row["error"]:
            continue
        colour = item.options[ord(item.answer) - ord("A")][3:]
        if int(item.video[-3:]) % 7 == 3:  # this video has no subtitle file
            text = "" if protocol == "videochat_flash" else "No subtitles available"
        elif protocol == "videochat_flash":  # the fork: every line
            text = f"A square appears.\nIt is {colour}.\nGoodbye."
        else:  # 128 frames over 16: the cue between frames 15.6 and 15.8 covers none
            text = f"A square appears.\nIt is {colour}."
        assert row["question"] == rule.prompt(dataclasses.replace(item, subtitle=text))
    if protocol == "videochat_flash":
        assert rows[3]["question"].startswith("\nThese are the frames of a video. Select")  # the fork, no file
        assert rows[4]["question"].startswith("This video's subtitles are listed below: \nA square appears.\n")
    assert [q for _, q, *_ in model.seen] == [r["question"] for r in rows if not r["error"]]


def test_longvideobench_with_subtitles_end_to_end(subtitled, tmp_path):
    ann, videos, subs = subtitled["longvideobench"]
    out = str(tmp_path / "r.jsonl")
    summary = runner.evaluate(FrameModel(), "longvideobench", ann, videos, out, subtitles=subs)
    rows = _rows(out)
    assert summary["errors"] == 3 and rows[2]["error"].startswith(f"ConfigError: {subs}/vid_002_en.json: not valid JSON")
    rule = get_task("longvideobench").rule("videochat_flash")
    for n, (row, item) in enumerate(zip(rows, load_items(get_task("longvideobench"), ann))):
        if row["error"]:
            continue
        colour = item.options[ord(item.answer) - ord("A")]
        # odd items: subtitles start at 10 s, so the integer end (read as the 4 s duration) lands before the start
        text = "A square appears." if n % 2 else f"A square appears.\nIt is {colour}."
        assert row["question"] == rule.prompt(dataclasses.replace(item, subtitle=text))
    assert rows[4]["question"].startswith(" This video's subtitles are listed below: \nA square appears.\nIt is ")


def test_subtitles_cli_errors(subtitled, tmp_path, capsys):
    ann, videos, subs = subtitled["mvbench"]
    args = ["eval", "--model", "tiny", "--task", "mvbench", "--annotations", ann, "--videos", videos,
            "--out", str(tmp_path / "r.jsonl")]
    assert main(args + ["--subtitles", subs]) == 1
    assert capsys.readouterr().err.strip() == (
        "lvjax eval: error: --subtitles: task mvbench has no subtitles (only videomme, longvideobench)")
    ann, videos, _ = subtitled["videomme"]
    args[4:9:2] = ["videomme", ann, videos]
    assert main(args + ["--subtitles", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip().endswith("nope: no such folder")
    assert not os.path.exists(tmp_path / "r.jsonl")


# ----------------------------------------------------------------------------- start/end bounds


def test_bounds_reach_the_model_and_frames_stay_inside(subtitled, tmp_path):
    ann, videos, _ = subtitled["mvbench"]
    model = FrameModel()
    runner.evaluate(model, "mvbench", ann, videos, str(tmp_path / "r.jsonl"), options=runner.answer_options(max_frames=8))
    records = {r["video"]: r for name in os.listdir(ann) for r in json.load(open(os.path.join(ann, name)))}
    bounded = 0
    for video, _, start, end, indices in model.seen:
        r = records[video]
        assert (start, end) == (r.get("start"), r.get("end"))
        if start is not None:
            bounded += 1
            # the stand-in reads as the VideoChat-Flash handle does (1 fps, clips of 8, 8 frames at most and least)
            assert indices == reference_bounded_indices(16, 4.0, start, end, 1.0, 8, 8, 8)
            assert int(start * 4) <= min(indices) and max(indices) < int(start * 4) + int((end - start) * 4)
    assert bounded >= 5


def test_bounded_frames_of_a_real_model_follow_the_fork(subtitled):
    ann, videos, _ = subtitled["mvbench"]
    model = lvjax.load("tiny")
    s = model.family.sampling(model.config)
    opts = runner.answer_options(max_frames=8)
    items = [it for it in load_items(get_task("mvbench"), ann) if it.bound and it.video not in ("vid_000.mp4",
                                                                                                  "vid_001.mp4")]
    assert items
    for it in items:
        start, end = it.bound
        frames = model.frames(os.path.join(videos, it.video), max_frames=opts["max_frames"],
                              min_frames=opts["min_frames"], start=start, end=end)
        want = reference_bounded_indices(16, 4.0, start, end, s.fps, s.frame_multiple, opts["min_frames"], 8)
        assert frames.indices.tolist() == want
        assert frames.duration == pytest.approx(min(4.0 - 0.1, end) - start)
