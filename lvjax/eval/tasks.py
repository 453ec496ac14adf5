"""Benchmark tasks: annotation records → items, and each original's prompt and answer rule.

A task turns the benchmark's own records (see `records.py`) into `Item`s and, per protocol
(`videochat_flash` = the VideoChat-Flash/XComp lmms-eval fork, `video_xl` = Video-XL's scripts,
`video_xl2` = Video-XL-2's `eval/lvu`), builds the prompt and parses the output. Where an
original ships no rule for a benchmark, the protocol falls back to the lmms-eval fork's rule
(the table is in docs/eval.md). Scores and group breakdowns are in `summary.py`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
from typing import Any, Callable

from lvjax.config import ConfigError
from lvjax.eval import parsers, subtitles
from lvjax.eval.records import read_records
from lvjax.prompt import multiple_choice
from lvjax.video import probe_video

PROTOCOLS = ("videochat_flash", "video_xl", "video_xl2")
FAMILY_PROTOCOL = {"videochat_flash": "videochat_flash", "video_xl": "video_xl", "video_xl_pro": "video_xl",
                   "video_xl2": "video_xl2"}
LETTERS = string.ascii_uppercase
LETTER_POST = "Answer with the option's letter from the given choices directly."
SHORT_POST = "Answer with a single word or number."
BEST_POST = "\nOnly give the best option."
VIDEOMME_FRAMES = ("These are the frames of a video. Select the best answer to the following multiple-choice "
                   "question based on the video. Respond with only the letter (A, B, C, or D) of the correct option.")
VIDEOMME_FRAMES_SUBS = VIDEOMME_FRAMES.replace("frames of a video", "frames and subtitles of a video").replace(
    "based on the video.", "based on the video and the subtitles.")
VIDEOMME_XL2 = ("Select the best answer to the following multiple-choice question based on the video and the "
                "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
SUBTITLES_HEAD = "This video's subtitles are listed below: \n"
VIDEOMME_XL2_FRAMES = 128  # Video-XL-2's `videomme_w_subtitle.yaml` frame_num: the frames subtitles are read at
GROUNDING = ("Please find the visual event described by a sentence in the video, determining its starting and ending "
             "times. The format should be: 'The event happens in the start time - end time'. For example, The event "
             "'person turn a light on' happens in the 24.3 - 30.4 seconds. Now I will give you the textual sentence: "
             "{sentence}. Please return its start time and end time.")
VIDEO_EXTENSIONS = ("", ".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")


@dataclasses.dataclass(frozen=True)
class Item:
    """One question. answer: a letter, or (start, end) seconds for grounding. groups: breakdown → value(s).
    unit: the scoring unit (VNBench scores a video's 4 tries together); defaults to the id.
    bound: (start, end) seconds the frames are sampled in (MVBench/MLVU `start`/`end`; either may be None).
    subtitle: None without subtitles, else the text put in the prompt (`Rule.subtitles` fills it);
    subtitle_file, duration (s), subtitle_offset (s): what the task's subtitle rule reads."""

    id: str
    video: str
    question: str
    options: tuple[str, ...] = ()
    answer: Any = None
    groups: dict = dataclasses.field(default_factory=dict)
    unit: str = ""
    bound: tuple[float | None, float | None] | None = None
    subtitle: str | None = None
    subtitle_file: str = ""
    duration: float | None = None
    subtitle_offset: float = 0.0


@dataclasses.dataclass(frozen=True)
class Rule:
    """A protocol's prompt builder and parser for one task; skip_empty: empty outputs leave the denominator.
    subtitles: (item, subtitle folder, video path) → the subtitle text, for tasks that have subtitles."""

    prompt: Callable[[Item], str]
    parse: Callable[[str, Item], Any]
    skip_empty: bool = False
    subtitles: Callable[[Item, str, str], str] | None = None


def _need(record: dict, key: str, where: str) -> Any:
    if key not in record or record[key] is None:
        raise ConfigError(f"{where}: missing field {key!r}")
    return record[key]


def _bound(record: dict, where: str) -> tuple[float | None, float | None] | None:
    """The record's `start`/`end` seconds (the fork samples frames only inside them), or None."""
    start, end = record.get("start"), record.get("end")
    if start is None and end is None:
        return None
    try:
        return (None if start is None else float(start), None if end is None else float(end))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: start/end {start!r}/{end!r} are not seconds") from None


def _letter_of(options, answer, where: str) -> str:
    """The letter of `answer` among `options` (the originals compare candidate text with the answer)."""
    for i, option in enumerate(options):
        if option == answer:
            return LETTERS[i]
    raise ConfigError(f"{where}: answer {answer!r} is not one of the candidates")


def _paren_options(item: Item) -> str:
    return "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(item.options))


def _mcq_acc_parse(output: str, item: Item) -> str:
    return parsers.mcq_letter(output)


def _paren_parse(output: str, item: Item) -> str:
    return parsers.paren_letter(output)


MCQ_ACC = dict(parse=_mcq_acc_parse, skip_empty=True)


def _xl2_mlvu(item: Item) -> str:
    question = item.question + "\n" + _paren_options(item).rstrip("\n")
    return "\n" + question + "\nOnly give the best option.\n" + "\n" + "Best option: ("


class Task:
    """A benchmark: `items(records)`, and per protocol a `Rule` (prompt, parse)."""

    name = ""
    breakdowns: tuple[str, ...] = ()
    max_new_tokens = 16

    def items(self, records: list[tuple[str, dict]]) -> list[Item]:
        raise NotImplementedError

    def rules(self) -> dict[str, Rule]:
        raise NotImplementedError

    def rule(self, protocol: str) -> Rule:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        table = self.rules()
        return table.get(protocol, table["videochat_flash"])

    def correct(self, parsed: Any, item: Item) -> bool:
        return parsed == item.answer


class MLVU(Task):
    """MLVU multiple choice: records {video, question, candidates, answer (text), question_type}, and
    optionally start/end seconds (the frames are sampled inside them, as the fork's `doc_to_visual`)."""

    name = "mlvu_mc"
    breakdowns = ("task_type",)

    def items(self, records):
        out = []
        for n, (source, r) in enumerate(records):
            where = f"{source} record {n}"
            options = tuple(_need(r, "candidates", where))
            out.append(Item(id=str(r.get("question_id", f"{source}/{n}")), video=str(r.get("video") or _need(r, "video_name", where)),
                            question=str(_need(r, "question", where)), options=options,
                            answer=_letter_of(options, _need(r, "answer", where), where), bound=_bound(r, where),
                            groups={"task_type": str(r.get("question_type") or r.get("task_type") or source)}))
        return out

    def rules(self):
        return {
            "videochat_flash": Rule(lambda it: f"Question:{it.question}\nOption:\n{_paren_options(it)}{LETTER_POST}", **MCQ_ACC),
            "video_xl2": Rule(_xl2_mlvu, _paren_parse),
        }


class MVBench(MLVU):
    """MVBench: one JSON per sub-task {video, question, candidates, answer (text), start/end for some};
    the file stem is the task."""

    name = "mvbench"

    def rules(self):
        # every sub-task YAML of the fork (`mvbench_<task>.yaml`) sets post_prompt "\nOnly give the best option."
        return {"videochat_flash": Rule(lambda it: f"Question: {it.question}\nOption:\n{_paren_options(it)}{BEST_POST}",
                                        **MCQ_ACC)}


_LVBENCH_OPTION = re.compile(r"^\(([A-Z])\)\s*(.*)$")


class LVBench(Task):
    """LVBench: the official `video_info.meta.jsonl` (per video: key, type, qa[{uid, question with
    "(A) …" lines, answer letter, question_type list}]) or flat records {video, question, candidates, answer}."""

    name = "lvbench"
    breakdowns = ("video_type", "question_type")

    def items(self, records):
        out = []
        for n, (source, r) in enumerate(records):
            where = f"{source} record {n}"
            if "qa" in r:
                key = str(_need(r, "key", where))
                for k, qa in enumerate(r["qa"]):
                    lines = str(_need(qa, "question", f"{where} qa {k}")).split("\n")
                    options = tuple(m.group(2) for m in map(_LVBENCH_OPTION.match, lines) if m)
                    question = "\n".join(line for line in lines if not _LVBENCH_OPTION.match(line))
                    types = qa.get("question_type") or []
                    out.append(Item(id=str(qa.get("uid", f"{key}/{k}")), video=key, question=question, options=options,
                                    answer=str(_need(qa, "answer", f"{where} qa {k}")).strip("()"),
                                    groups={"video_type": str(r.get("type", "")), "question_type": list(types)}))
            else:
                options = tuple(_need(r, "candidates", where))
                out.append(Item(id=str(r.get("uid", f"{source}/{n}")), video=str(_need(r, "video", where)),
                                question=str(_need(r, "question", where)), options=options,
                                answer=_letter_of(options, _need(r, "answer", where), where),
                                groups={"video_type": str(r.get("type", "")),
                                        "question_type": list(r.get("question_type") or [])}))
        return out

    def rules(self):

        return {"videochat_flash": Rule(lambda it: multiple_choice(it.question, it.options, LETTER_POST), **MCQ_ACC)}


class VideoMME(Task):
    """Video-MME: the parquet columns (videoID, question_id, duration, domain, sub_category, task_type,
    question, options ["A. …", …], answer letter), from parquet or the same rows as JSON/JSONL.
    Subtitles: `<videoID>.srt` (see `subtitles.py` for each protocol's choice of lines)."""

    name = "videomme"
    breakdowns = ("duration", "domain", "sub_category", "task_type")

    def items(self, records):
        out = []
        for n, (source, r) in enumerate(records):
            where = f"{source} record {n}"
            video = str(_need(r, "videoID", where))
            out.append(Item(id=str(_need(r, "question_id", where)), video=video,
                            question=str(_need(r, "question", where)), options=tuple(_need(r, "options", where)),
                            answer=str(_need(r, "answer", where)), subtitle_file=video + ".srt",
                            groups={k: str(_need(r, k, where)) for k in self.breakdowns}))
        return out

    def rules(self):
        def flash(it: Item) -> str:
            body = "Question: " + it.question + "\nOption:\n" + "\n".join(it.options)
            if it.subtitle is None:
                return VIDEOMME_FRAMES + "\n" + body + "\n" + LETTER_POST
            # the fork's `videomme_w_subtitle`: no header and the frames-only instruction without a subtitle file
            head = (SUBTITLES_HEAD + it.subtitle, VIDEOMME_FRAMES_SUBS) if it.subtitle else ("", VIDEOMME_FRAMES)
            return f"{head[0]}\n{head[1]}\n{body}\nThe best answer is:"

        def xl2(it: Item) -> str:
            prompt = VIDEOMME_XL2 + "\n" + it.question + "\n" + str(list(it.options)) + "\n" + "The best answer is:"
            return prompt if it.subtitle is None else SUBTITLES_HEAD + it.subtitle + "\n" + prompt

        def full(it: Item, folder: str, video: str) -> str:
            path = os.path.join(folder, it.subtitle_file)
            return subtitles.videomme_full(subtitles.read_srt(path)) if os.path.isfile(path) else ""

        def at_frames(it: Item, folder: str, video: str) -> str:
            path = os.path.join(folder, it.subtitle_file)
            if not os.path.isfile(path):
                return subtitles.NO_SUBTITLES
            cues = subtitles.read_srt(path)
            info = probe_video(video)
            frames = subtitles.uniform_frames(info["num_frames"], VIDEOMME_XL2_FRAMES)
            return subtitles.videomme_at_frames(cues, frames, info["fps"])

        letter = lambda out, it: parsers.videomme_letter(out)  # noqa: E731
        return {"videochat_flash": Rule(flash, letter, subtitles=full), "video_xl2": Rule(xl2, letter, subtitles=at_frames)}


class LongVideoBench(Task):
    """LongVideoBench `lvb_val.json` (candidates list, correct_choice 0–4, duration_group,
    question_category) or the lmms-eval parquet rows (option0 … option4, "N/A" for unused).
    Subtitles: the JSON named by `subtitle_path`, matched to the frame times as the fork does."""

    name = "longvideobench"
    breakdowns = ("duration_group", "question_category")
    max_new_tokens = 32

    def items(self, records):
        out = []
        for n, (source, r) in enumerate(records):
            where = f"{source} record {n}"
            if "candidates" in r:
                options = tuple(r["candidates"])
            else:
                options = tuple(o for o in (r.get(f"option{i}", "N/A") for i in range(5)) if o != "N/A")
            choice = int(_need(r, "correct_choice", where))
            if not 0 <= choice < len(options):
                raise ConfigError(f"{where}: correct_choice {choice} out of range for {len(options)} options")
            try:
                duration = None if r.get("duration") is None else float(r["duration"])
                offset = float(r.get("starting_timestamp_for_subtitles") or 0.0)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: duration / starting_timestamp_for_subtitles are not seconds") from None
            out.append(Item(id=str(r.get("id", f"{source}/{n}")), video=str(_need(r, "video_path", where)),
                            question=str(_need(r, "question", where)), options=options, answer=LETTERS[choice],
                            groups={k: str(_need(r, k, where)) for k in self.breakdowns},
                            subtitle_file=str(r.get("subtitle_path") or ""), duration=duration, subtitle_offset=offset))
        return out

    def rules(self):
        def flash(it: Item) -> str:
            question = it.question + "\n" + "\n".join(f"({LETTERS[i]}). {o}" for i, o in enumerate(it.options))
            if it.subtitle is not None:
                return (f" {SUBTITLES_HEAD}{it.subtitle}.\n Select the best answer to the "
                        "following multiple-choice question based on the video and the subtitles. Respond with only "
                        f"the letter of the correct option.\nQuestion: {question}\n{LETTER_POST}\n")
            return f"{question}\n{LETTER_POST}\n"

        def interleaved(it: Item, folder: str, video: str) -> str:
            if not it.subtitle_file or it.duration is None:
                raise ConfigError(f"item {it.id}: subtitles need the record's subtitle_path and duration")
            path = subtitles.lvb_path(folder, it.subtitle_file)
            if not os.path.isfile(path):
                raise ConfigError(f"subtitle file not found: {path}")
            cues = subtitles.read_lvb(path, it.duration)
            return subtitles.lvb_select(cues, subtitles.lvb_frame_times(it.duration), it.subtitle_offset)

        return {"videochat_flash": Rule(flash, lambda out, it: parsers.lvb_choice(out, it.options, seed=it.id),
                                        subtitles=interleaved)}


class VNBench(Task):
    """VNBench `VNBench-main-4try.json`: {video, question, options, gt (text), type, try}; a video
    counts as correct only when all its tries are (VNBench's circular scoring)."""

    name = "vnbench"
    breakdowns = ("type",)

    def items(self, records):
        out, seen = [], {}
        for n, (source, r) in enumerate(records):
            where = f"{source} record {n}"
            video = os.path.basename(str(_need(r, "video", where)))
            stem = os.path.splitext(video)[0]
            seen[stem] = seen.get(stem, -1) + 1
            options = tuple(_need(r, "options", where))
            out.append(Item(id=f"{stem}_{seen[stem]}", video=video, question=str(_need(r, "question", where)),
                            options=options, answer=_letter_of(options, _need(r, "gt", where), where),
                            groups={"type": str(_need(r, "type", where))}, unit=stem))
        return out

    def rules(self):
        def xl(it: Item) -> str:
            return (f"Question: {it.question}\nOptions:\n" + _paren_options(it)).rstrip() + "\n"

        def xl2(it: Item) -> str:
            return it.question + "\n" + _paren_options(it).rstrip("\n") + "\n" + LETTER_POST + "\n"

        xl2_rule = Rule(xl2, lambda out, it: parsers.dot_letter(out))
        return {"videochat_flash": xl2_rule, "video_xl2": xl2_rule,
                "video_xl": Rule(xl, lambda out, it: parsers.first_paren_group(out))}


class CharadesSTA(Task):
    """Charades-STA `charades_sta_test.txt` (`VID START END##sentence`) or records {video, start, end, sentence}.
    Correct = IoU ≥ 0.5; the summary adds R@1 at IoU 0.3/0.5/0.7 and mIoU."""

    name = "charades_sta"
    max_new_tokens = 32
    iou_threshold = 0.5

    def items(self, records):
        out = []
        for n, (source, r) in enumerate(records):
            where = f"{source} record {n}"
            video = str(_need(r, "video", where))
            span = r.get("timestamp") or (_need(r, "start", where), _need(r, "end", where))
            out.append(Item(id=str(r.get("id", f"{video}_{n}")), video=video,
                            question=str(r.get("sentence") or _need(r, "query", where)),
                            answer=(float(span[0]), float(span[1]))))
        return out

    def rules(self):
        return {"videochat_flash": Rule(lambda it: GROUNDING.format(sentence=it.question),
                                        lambda out, it: parsers.interval(out))}

    def correct(self, parsed, item):
        return parsed is not None and parsers.iou(tuple(parsed), tuple(item.answer)) >= self.iou_threshold


class Synthetic(MLVU):
    """`make-benchmark synthetic`: MLVU-format records; scored with each protocol's MLVU rule."""

    name = "synthetic"


class SyntheticQA(Task):
    """`lvjax.synthetic_qa`: records {id, video, question, candidates, answer (text), question_type}.

    With candidates it is multiple choice (MLVU's prompt and letter rule); without, a short
    answer: the prompt asks for one word or number and the first word of the output is compared
    with the answer, case-insensitively."""

    name = "synthetic_qa"
    breakdowns = ("question_type",)

    def items(self, records):
        out = []
        for n, (source, r) in enumerate(records):
            where = f"{source} record {n}"
            options = tuple(r.get("candidates") or ())
            answer = str(_need(r, "answer", where))
            out.append(Item(id=str(r.get("id", f"{source}/{n}")), video=str(_need(r, "video", where)),
                            question=str(_need(r, "question", where)), options=options,
                            answer=_letter_of(options, answer, where) if options else answer.lower(),
                            groups={"question_type": str(_need(r, "question_type", where))}))
        return out

    def rules(self):
        mlvu = MLVU().rules()["videochat_flash"]

        def prompt(it: Item) -> str:
            return mlvu.prompt(it) if it.options else f"Question:{it.question}\n{SHORT_POST}"

        def parse(out: str, it: Item) -> str:
            return mlvu.parse(out, it) if it.options else parsers.first_word(out)

        return {"videochat_flash": Rule(prompt, parse, skip_empty=False)}


class NIAH(MLVU):
    """Needle in a haystack (`make-benchmark niah`): MLVU-format records plus depth, needle_len, hops."""

    name = "niah"
    breakdowns = ("depth", "needle_len", "hops")

    def items(self, records):
        base = super().items(records)
        return [dataclasses.replace(it, groups={k: str(_need(r, k, f"{s} record {n}")) for k in self.breakdowns})
                for n, (it, (s, r)) in enumerate(zip(base, records))]


TASKS: dict[str, Task] = {t.name: t for t in (MLVU(), VideoMME(), LVBench(), LongVideoBench(), MVBench(), VNBench(),
                                                CharadesSTA(), NIAH(), Synthetic(), SyntheticQA())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"--task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[name]


def load_items(task: Task, annotations: str) -> list[Item]:
    """The task's items from an annotation file or folder; ids must be unique."""

    items = task.items(read_records(annotations))
    if not items:
        raise ConfigError(f"{annotations}: no items")
    seen = set()
    for it in items:
        if it.id in seen:
            raise ConfigError(f"{annotations}: duplicate item id {it.id!r}")
        seen.add(it.id)
    return items


def resolve_video(videos: str, name: str) -> str:
    """The video file for an annotation's name under `videos` (trying the usual extensions), or the plain join."""
    path = os.path.join(videos, name)
    for ext in VIDEO_EXTENSIONS:
        if os.path.isfile(path + ext):
            return path + ext
    return path
