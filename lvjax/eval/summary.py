"""Scores of a results file: overall and per-group accuracy (percent), error counts, the table.

As the originals: groups are sample-weighted (a group's accuracy is its correct / its items,
overall is over all items, not a mean of group means); under the lmms-eval fork's `mcq_acc`
tasks an empty output leaves the denominator (`skip_empty`); VNBench scores a video's tries
together (correct only if all are); Charades-STA adds R@1 at IoU 0.3/0.5/0.7 and mIoU.
Items with an error (missing or unreadable video) are counted in `errors` and not scored.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Sequence

from lvjax.eval import parsers


def _pct(correct: int, n: int) -> float | None:
    return round(100.0 * correct / n, 4) if n else None


def _values(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


def summarize(rows: Sequence[dict], *, task: str, protocol: str, skip_empty: bool,
              breakdowns: Sequence[str]) -> dict:
    """Summary dict of result rows (each with correct, error, output, groups, unit, parsed, answer)."""
    errors = [r for r in rows if r.get("error")]
    scored = [r for r in rows if not r.get("error") and not (skip_empty and r.get("output", "") == "")]
    units: dict[str, list[dict]] = {}
    for r in scored:
        units.setdefault(r.get("unit") or r["id"], []).append(r)
    if any(r.get("unit") for r in scored):  # VNBench: one score per video (all tries right)
        scored = [dict(rs[0], correct=all(x["correct"] for x in rs)) for rs in units.values()]
    out: dict[str, Any] = {
        "task": task, "protocol": protocol, "items": len(rows), "scored": len(scored), "errors": len(errors),
        "empty_outputs": sum(1 for r in rows if not r.get("error") and r.get("output", "") == ""),
        "accuracy": _pct(sum(bool(r["correct"]) for r in scored), len(scored)),
        "groups": {},
    }
    for key in breakdowns:
        table: dict[str, list[int]] = {}
        for r in scored:
            for v in _values(r.get("groups", {}).get(key, "")):
                cell = table.setdefault(v, [0, 0])
                cell[0] += bool(r["correct"])
                cell[1] += 1
        out["groups"][key] = {v: {"n": n, "correct": c, "accuracy": _pct(c, n)} for v, (c, n) in sorted(table.items())}
    if task == "charades_sta":
        ious = [parsers.iou(tuple(r["parsed"]), tuple(r["answer"])) if r["parsed"] else 0.0 for r in scored]
        for t in (0.3, 0.5, 0.7):
            out[f"R@1,IoU={t}"] = _pct(sum(i >= t for i in ious), len(ious))
        out["mIoU"] = round(100.0 * sum(ious) / len(ious), 4) if ious else None
    if errors:
        out["error_ids"] = [r["id"] for r in errors]
    return out


def table(summary: dict) -> str:
    """A plain-text table: overall, extra metrics, then each breakdown's groups."""
    acc = lambda a: "-" if a is None else f"{a:6.2f}"  # noqa: E731
    lines = [f"{summary['task']} ({summary['protocol']}): accuracy {acc(summary['accuracy'])} % over "
             f"{summary['scored']} scored of {summary['items']} items, {summary['errors']} errors, "
             f"{summary['empty_outputs']} empty outputs"]
    lines += [f"  {k:<24} {acc(v)}" for k, v in summary.items() if k.startswith(("R@1", "mIoU"))]
    for key, groups in summary["groups"].items():
        lines.append(f"  by {key}:")
        lines += [f"    {name[:40]:<40} {acc(g['accuracy'])}  (n={g['n']})" for name, g in groups.items()]
    return "\n".join(lines)


def write_json_atomic(path: str, data: Any) -> None:
    """Write JSON via a temporary file in the same folder and rename (never half-written)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def summary_path(results: str) -> str:
    """RESULTS.jsonl → RESULTS.summary.json (beside it)."""
    root = results[: -len(".jsonl")] if results.endswith(".jsonl") else results
    return root + ".summary.json"
