"""`lvjax eval`'s loop: items → `model.answer` → one JSON line per item, resumable and data-parallel.

Each line: index, id, video, question (the prompt sent), output (raw text), parsed, answer,
correct, error (null or a message), groups, unit, frames, report (the answer report without
timings) and timing (seconds per stage: read, vision, merge, prefill, decode, total) — timings
only under `timing`, so two runs compare equal once it is dropped. Lines are appended and
flushed one by one; a re-run skips the items already in the file (a partial last line left by a
kill is cut off first). With n processes (`jax.distributed`), item i goes to process i % n, each
writes `RESULTS.jsonl.part-P-of-N`, and process 0 merges the parts in item order when all are done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
from tqdm import tqdm

from lvjax.config import ConfigError
from lvjax.eval.niah import write_heatmap
from lvjax.eval.summary import summarize, summary_path, write_json_atomic
from lvjax.eval.tasks import (
    FAMILY_PROTOCOL,
    TASKS,
    Item,
    Rule,
    Task,
    get_task,
    load_items,
    resolve_video,
)

DEFAULT_MIN_FRAMES = 64  # the answer handle's default frame floor (lowered to --max-frames when that is smaller)
STAGES = ("read", "vision", "merge", "prefill", "decode")


def answer_options(*, max_frames: int | None = None, min_frames: int | None = None, fps: float | None = None,
                   compression: str | None = None, max_new_tokens: int | None = None) -> dict:
    """Keyword options for `model.answer`; a frame cap N also lowers the floor to min(64, N)."""
    if max_frames is not None and min_frames is None:
        min_frames = min(DEFAULT_MIN_FRAMES, max_frames)
    opts = dict(max_frames=max_frames, min_frames=min_frames, fps=fps, compression=compression,
                max_new_tokens=max_new_tokens)
    return {k: v for k, v in opts.items() if v is not None}


def default_protocol(model: Any) -> str:
    name = getattr(getattr(model, "family", None), "name", None)
    if name not in FAMILY_PROTOCOL:
        raise ConfigError(f"model family {name!r} has no evaluation protocol (a video model is needed)")
    return FAMILY_PROTOCOL[name]


def process_info() -> tuple[int, int]:
    """(process index, count): from `jax.distributed` when JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID are set (initialising it), else (0, 1). Call before any JAX computation."""
    env = os.environ
    if not env.get("JAX_COORDINATOR_ADDRESS"):
        return 0, 1
    try:
        n, p = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
    except (KeyError, ValueError):
        raise ConfigError("JAX_COORDINATOR_ADDRESS is set: JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers") from None
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"], num_processes=n, process_id=p)
    return jax.process_index(), jax.process_count()


def _row(index: int, item: Item, prompt: str, rule: Rule, task: Task, output: str | None, error: str | None,
         report: dict, wall: float) -> dict:
    parsed = None if error else rule.parse(output, item)
    timing = {k: report.get(f"seconds_{k}") for k in STAGES if f"seconds_{k}" in report}
    timing["total"] = round(wall, 4)
    return {
        "index": index, "id": item.id, "video": item.video, "question": prompt, "output": output, "parsed": parsed,
        "answer": item.answer, "correct": False if error else bool(task.correct(parsed, item)), "error": error,
        "groups": item.groups, "unit": item.unit, "frames": report.get("frames"),
        "report": {k: v for k, v in report.items() if not k.startswith("seconds_") and k != "frames"},
        "timing": timing,
    }


def _bound_options(item: Item) -> dict:
    """`start`/`end` for `model.answer` from the item's bound (only the sides it has)."""
    if item.bound is None:
        return {}
    return {k: v for k, v in zip(("start", "end"), item.bound) if v is not None}


def answer_item(model: Any, task: Task, rule: Rule, index: int, item: Item, videos: str, options: dict,
                subtitles: str | None = None) -> dict:
    """One result row; a missing or unreadable video or subtitle file (or any ValueError/OSError of the
    answer) is an error row. subtitles: the folder of subtitle files (None: no subtitles)."""
    prompt = rule.prompt(item)
    path = resolve_video(videos, item.video)
    t0 = time.perf_counter()
    output, error, report = None, None, {}
    if not os.path.isfile(path) and not os.path.isdir(path):
        error = f"video not found: {path}"
    else:
        try:
            if subtitles is not None:
                item = dataclasses.replace(item, subtitle=rule.subtitles(item, subtitles, path))
                prompt = rule.prompt(item)
            output, report = model.answer(path, prompt, **options, **_bound_options(item))
        except (ValueError, OSError) as e:  # VideoError / ConfigError are ValueErrors
            error = f"{type(e).__name__}: {e}"
    return _row(index, item, prompt, rule, task, output, error, report, time.perf_counter() - t0)


def read_rows(path: str, items: Sequence[Item] | None = None, repair: bool = False) -> dict[int, dict]:
    """Complete rows of a results file by index. repair: cut off a partial last line (a killed run).
    With `items`, each row's id must match its item (the file belongs to this benchmark)."""
    if not os.path.isfile(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    rows = {}
    for n, line in enumerate(data[:end].splitlines(), 1):
        try:
            row = json.loads(line)
            index = int(row["index"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}:{n}: not a result line") from None
        if items is not None and (index >= len(items) or items[index].id != row.get("id")):
            raise ConfigError(f"{path}:{n}: item {index} id {row.get('id')!r} is not in these annotations "
                              "(a results file of another benchmark or --limit?)")
        rows[index] = row
    return rows


def _write_rows(path: str, rows: Sequence[dict]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jsonl", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _part(out: str, p: int, n: int) -> str:
    return f"{out}.part-{p}-of-{n}"


def _merge(out: str, n: int, total: int, poll: float = 0.5) -> None:
    """Process 0: wait for every part's `.done` marker, then write all rows in item order into `out`."""
    waiting = False
    while not all(os.path.isfile(_part(out, p, n) + ".done") for p in range(n)):
        if not waiting:
            print(f"waiting for the other {n - 1} processes to finish their parts of {out}", file=sys.stderr)
            waiting = True
        time.sleep(poll)
    rows = read_rows(out)
    for p in range(n):
        rows.update(read_rows(_part(out, p, n)))
    if sorted(rows) != list(range(total)):
        raise ConfigError(f"{out}: merged parts hold {len(rows)} of {total} items")
    _write_rows(out, [rows[i] for i in range(total)])
    for p in range(n):
        for path in (_part(out, p, n), _part(out, p, n) + ".done"):
            os.unlink(path)


def finish(out: str, task: Task, protocol: str, rows: Sequence[dict]) -> dict:
    """Summary of the rows, written atomically beside `out` (and the NIAH heatmap)."""
    rule = task.rule(protocol)
    summary = summarize(rows, task=task.name, protocol=protocol, skip_empty=rule.skip_empty, breakdowns=task.breakdowns)
    summary["results"] = os.path.basename(out)
    if task.name == "niah":
        summary["heatmap"] = write_heatmap(rows, out)
    write_json_atomic(summary_path(out), summary)
    return summary


def check_subtitles(task: Task, protocol: str, folder: str) -> None:
    """ConfigError unless the task has subtitles under this protocol and `folder` is a folder."""
    if task.rule(protocol).subtitles is None:
        with_subs = [t.name for t in TASKS.values() if t.rule(protocol).subtitles]
        raise ConfigError(f"--subtitles: task {task.name} has no subtitles (only {', '.join(with_subs)})")
    if not os.path.isdir(folder):
        raise ConfigError(f"--subtitles {folder}: no such folder")


def evaluate(model: Any, task_name: str, annotations: str, videos: str, out: str, *, protocol: str | None = None,
             limit: int | None = None, options: dict | None = None, process: tuple[int, int] = (0, 1),
             progress: bool | None = None, subtitles: str | None = None) -> dict | None:
    """Run (or resume) an evaluation; returns the summary (None on processes other than 0).
    subtitles: folder of the benchmark's subtitle files (Video-MME, LongVideoBench); None: none."""
    task = get_task(task_name)
    protocol = protocol or default_protocol(model)
    rule = task.rule(protocol)
    if subtitles is not None:
        check_subtitles(task, protocol, subtitles)
    items = load_items(task, annotations)[:limit]
    opts = {"max_new_tokens": task.max_new_tokens, **(options or {})}
    p, n = process
    target = out if n == 1 else _part(out, p, n)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    done = {i: r for i, r in read_rows(out, items, repair=n == 1).items() if i % n == p}
    if n > 1:
        done.update(read_rows(target, items, repair=True))
    todo = [i for i in range(p, len(items), n) if i not in done]

    bar = tqdm(total=len(range(p, len(items), n)), initial=len(range(p, len(items), n)) - len(todo), unit="item",
               desc=f"{task.name}" + (f" [{p}/{n}]" if n > 1 else ""),
               disable=not (sys.stderr.isatty() if progress is None else progress))
    with open(target, "a", encoding="utf-8") as f:
        for i in todo:
            row = answer_item(model, task, rule, i, items[i], videos, opts, subtitles)
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            bar.update()
    bar.close()
    if n > 1:
        open(target + ".done", "w").close()
        if p != 0:
            return None
        _merge(out, n, len(items))
    rows = read_rows(out, items)
    return finish(out, task, protocol, [rows[i] for i in sorted(rows)])


def rescore(task_name: str, annotations: str, results: str, out: str, protocol: str) -> dict:
    """Re-parse the `output` of every row of `results` with the task's rule; write `out` and its summary."""
    task = get_task(task_name)
    rule = task.rule(protocol)
    items = load_items(task, annotations)
    old = read_rows(results, items)
    if not old:
        raise ConfigError(f"{results}: no result rows")
    rows = []
    for i in sorted(old):
        row, item = dict(old[i]), items[i]
        if not row.get("error"):
            row["parsed"] = rule.parse(row["output"], item)
            row["correct"] = bool(task.correct(row["parsed"], item))
            row["answer"], row["groups"], row["unit"] = item.answer, item.groups, item.unit
        rows.append(row)
    rows = json.loads(json.dumps(rows))  # tuples → lists, as in a results file
    _write_rows(out, rows)
    return finish(out, task, protocol, rows)
