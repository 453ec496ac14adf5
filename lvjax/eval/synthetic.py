"""`lvjax make-benchmark <task>`: a tiny benchmark in each task's own annotation format.

Every item is one PyAV-rendered video (4 s at 4 frames/s, 64×64) of a coloured square over a
drifting gradient, asked "What colour is the square?" with the benchmark's option layout
(Charades-STA: the square is shown only between START and END seconds). Group fields cycle
through a few values so the breakdowns have several groups. MVBench's `action_sequence` rows
carry `start`/`end` seconds, as the real sub-task does. Video-MME and LongVideoBench write
subtitles to `OUT/subtitles/`: `<videoID>.srt` with Video-MME's font tags (every 7th video from
the 4th has none, as some Video-MME videos), `<video>_en.json` in both LongVideoBench entry
forms (odd items' times start at 10 s); each has cues that the sampled frames cover and one
that none covers.
`broken=True` leaves the first item's video missing and truncates the second's (the MP4 index
is lost), and makes the third's subtitle file malformed, to exercise error rows.
Deterministic for a given (task, n, seed).
"""

from __future__ import annotations

import json
import os

import numpy as np

from lvjax.config import ConfigError
from lvjax.eval import render
from lvjax.eval.tasks import LETTERS

QUESTION = "What colour is the square in the video?"
FPS, FRAMES, SIZE = 4, 16, 64
SUBTITLE_TASKS = ("videomme", "longvideobench")
FONT = '<font color="white" size=".72c">{}</font>'
BAD_SRT = "1\n00:00:0x,000 --> 00:00:01,000\nnot a subtitle\n"


def _video(path: str, colour: str, rng: np.random.RandomState, span: tuple[int, int] = (0, FRAMES)) -> None:
    x, y = rng.randint(0, SIZE - 24, size=2)
    frames = [render.with_square(render.background(k, SIZE), colour, x, y, 24) if span[0] <= k < span[1]
              else render.background(k, SIZE) for k in range(FRAMES)]
    render.write_mp4(path, frames, fps=FPS)


def _options(rng: np.random.RandomState, k: int) -> tuple[list[str], int]:
    names = list(render.COLOURS)
    options = [names[j] for j in rng.permutation(len(names))[:k]]
    return options, int(rng.randint(k))


def _cycle(values, i: int):
    return values[i % len(values)]


def make_benchmark(task: str, out: str, n: int, seed: int = 0, broken: bool = False) -> str:
    """Write `out/videos/` and the task's annotations; returns the annotation path for `--annotations`."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    writers = {"mlvu_mc": _mlvu, "synthetic": _mlvu, "mvbench": _mvbench, "lvbench": _lvbench, "videomme": _videomme,
               "longvideobench": _lvb, "vnbench": _vnbench, "charades_sta": _charades}
    if task not in writers:
        raise ConfigError(f"make-benchmark {task!r}: expected niah or one of {', '.join(writers)}")
    videos = os.path.join(out, "videos")
    os.makedirs(videos, exist_ok=True)
    rng = np.random.RandomState(seed)
    path, files = writers[task](out, videos, n, rng)
    if broken and files:
        os.unlink(os.path.join(videos, files[0]))
        if len(files) > 1:
            render.corrupt(os.path.join(videos, files[1]))
        if len(files) > 2:  # the third item's subtitle file, where the task has one
            stem = os.path.splitext(files[2])[0]
            for name, text in ((f"{stem}.srt", BAD_SRT), (f"{stem}_en.json", "{not json")):
                sub = os.path.join(out, "subtitles", name)
                if os.path.isfile(sub):
                    with open(sub, "w", encoding="utf-8") as f:
                        f.write(text)
    return path


def _dump(path: str, rows, jsonl: bool = False) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if jsonl:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            json.dump(rows, f, indent=1)
    return path


def _items(videos: str, n: int, rng, k: int = 4):
    """(index, file name, options, answer index) per item, rendering each video."""
    out = []
    for i in range(n):
        options, a = _options(rng, k)
        name = f"vid_{i:03d}.mp4"
        _video(os.path.join(videos, name), options[a], rng)
        out.append((i, name, options, a))
    return out


def _mlvu(out, videos, n, rng):
    rows = [{"video": name, "duration": FRAMES / FPS, "question": QUESTION, "candidates": opts, "answer": opts[a],
             "question_type": _cycle(["count", "order", "plotQA"], i)} for i, name, opts, a in _items(videos, n, rng)]
    return _dump(os.path.join(out, "annotations.json"), rows), [r["video"] for r in rows]


def _mvbench(out, videos, n, rng):
    by_task: dict[str, list] = {}
    files = []
    for i, name, opts, a in _items(videos, n, rng):
        sub = _cycle(["action_sequence", "object_existence"], i)
        row = {"video": name, "question": QUESTION, "candidates": opts, "answer": opts[a]}
        if sub == "action_sequence":  # STAR clips: the question is about [start, end] seconds of the video
            row.update(start=round(0.2 + 0.1 * (i % 5), 1), end=round(2.5 + 0.2 * (i % 4), 1))
        by_task.setdefault(sub, []).append(row)
        files.append(name)
    for sub, rows in by_task.items():
        _dump(os.path.join(out, "json", f"{sub}.json"), rows)
    return os.path.join(out, "json"), files


def _lvbench(out, videos, n, rng):
    rows = []
    for i, name, opts, a in _items(videos, n, rng):
        question = QUESTION + "\n" + "\n".join(f"({LETTERS[j]}) {o}" for j, o in enumerate(opts))
        rows.append({"key": name[:-4], "type": _cycle(["cartoon", "sport", "documentary"], i), "qa": [
            {"uid": 1000 + i, "question": question, "answer": LETTERS[a],
             "question_type": _cycle([["entity recognition"], ["key information retrieval", "reasoning"]], i),
             "time_reference": "00:00-00:04"}]})
    return _dump(os.path.join(out, "video_info.meta.jsonl"), rows, jsonl=True), [r["key"] + ".mp4" for r in rows]


def _videomme(out, videos, n, rng):
    rows = []
    for i, name, opts, a in _items(videos, n, rng):
        rows.append({"video_id": f"{i:03d}", "duration": _cycle(["short", "medium", "long"], i),
                     "domain": _cycle(["Knowledge", "Sports Competition"], i),
                     "sub_category": _cycle(["Astronomy", "Football", "Law"], i), "url": "", "videoID": name[:-4],
                     "question_id": f"{i:03d}-1", "task_type": _cycle(["Counting Problem", "OCR Problems"], i),
                     "question": QUESTION, "options": [f"{LETTERS[j]}. {o}" for j, o in enumerate(opts)],
                     "answer": LETTERS[a]})
        if i % 7 != 3:
            _srt(os.path.join(out, "subtitles", name[:-4] + ".srt"), opts[a])
    return _dump(os.path.join(out, "videomme.json"), rows), [r["videoID"] + ".mp4" for r in rows]


def _srt(path: str, colour: str) -> None:
    """Video-MME-style cues: two that frames cover (one with an untagged second line), one that none does."""
    cues = [("00:00:00,000", "00:00:01,500", FONT.format("A square appears.")),
            ("00:00:01,500", "00:00:03,250", FONT.format(f"It is {colour}.") + "\n(music)"),
            ("00:00:03,900", "00:00:03,950", FONT.format("Goodbye."))]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(f"{k}\n{a} --> {b}\n{text}\n" for k, (a, b, text) in enumerate(cues, 1)))


def _lvb_subtitles(path: str, colour: str, offset: float) -> None:
    """LongVideoBench-style entries: a float span, an integer end (read as the video's end), a short one
    that no whole second falls in, in both of the files' forms."""
    t = lambda s: f"00:00:{s + offset:06.3f}"  # noqa: E731
    rows = [{"timestamp": [0.0 + offset, 1.5 + offset], "text": "A square appears."},
            {"timestamp": [1.5 + offset, int(3 + offset)], "text": f"It is {colour}."},
            {"start": t(3.5), "end": t(3.7), "line": "Goodbye."}]
    _dump(path, rows)


def _lvb(out, videos, n, rng):
    rows = []
    for i, name, opts, a in _items(videos, n, rng, k=5):
        offset = 10.0 * (i % 2)
        rows.append({"video_id": name[:-4], "video_path": name, "subtitle_path": name[:-4] + "_en.json",
                     "duration": FRAMES / FPS, "duration_group": _cycle([15, 60, 600, 3600], i),
                     "starting_timestamp_for_subtitles": offset, "question": QUESTION, "candidates": opts,
                     "correct_choice": a, "question_category": _cycle(["S2E", "T3O", "E2O"], i),
                     "topic_category": "NP-News-Programs", "position": [1], "id": f"lvb_{i:03d}"})
        _lvb_subtitles(os.path.join(out, "subtitles", name[:-4] + "_en.json"), opts[a], offset)
    return _dump(os.path.join(out, "lvb_val.json"), rows), [r["video_path"] for r in rows]


def _vnbench(out, videos, n, rng):
    rows, files = [], []
    for v in range((n + 3) // 4):
        options, a = _options(rng, 4)
        name = f"vid_{v:03d}.mp4"
        _video(os.path.join(videos, name), options[a], rng)
        files.append(name)
        for t in range(min(4, n - 4 * v)):
            rotated = options[t:] + options[:t]  # VNBench's tries rotate the options
            rows.append({"video": f"VNBench/video/{name}", "question": QUESTION, "options": rotated, "gt": options[a],
                         "type": _cycle(["ret_insert1", "cnt_edit1", "ord_insert2"], v), "try": t})
    return _dump(os.path.join(out, "VNBench-main-4try.json"), rows), files


def _charades(out, videos, n, rng):
    lines, files = [], []
    for i in range(n):
        options, a = _options(rng, 4)
        start = int(rng.randint(0, FRAMES // 2))
        end = int(rng.randint(start + 2, FRAMES + 1))
        name = f"vid_{i:03d}"
        _video(os.path.join(videos, name + ".mp4"), options[a], rng, (start, end))
        lines.append(f"{name} {start / FPS:.1f} {end / FPS:.1f}##a {options[a]} square appears.\n")
        files.append(name + ".mp4")
    path = os.path.join(out, "charades_sta_test.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return path, files
