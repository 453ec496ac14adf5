"""Read benchmark annotation files as the benchmarks ship them: JSON, JSONL, parquet, or a folder of them.

`read_records(path)` → [(source, record)], `source` the file's stem (MLVU and MVBench ship one
file per sub-task, and the stem is that sub-task's name). Parquet needs `pyarrow`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lvjax.config import ConfigError

EXTENSIONS = (".json", ".jsonl", ".parquet", ".txt")


def _read_json(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict):  # {"name": [records]} or {id: record}
        values = list(data.values())
        data = [r for v in values for r in v] if all(isinstance(v, list) for v in values) else values
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{n}: not a JSON line ({e.msg})") from None
    return rows


def _read_parquet(path: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading parquet needs pyarrow (pip install 'lvjax[eval]')") from None
    return pq.read_table(path).to_pylist()


def _read_text(path: str) -> list[dict]:
    """Charades-STA's `VID START END##sentence` lines."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            head, sep, sentence = line.rstrip("\n").partition("##")
            parts = head.split()
            if not sep or len(parts) != 3:
                raise ConfigError(f"{path}:{n}: expected 'VIDEO START END##sentence', got {line.strip()!r}")
            rows.append({"video": parts[0], "start": float(parts[1]), "end": float(parts[2]), "sentence": sentence})
    return rows


_READERS = {".json": _read_json, ".jsonl": _read_jsonl, ".parquet": _read_parquet, ".txt": _read_text}


def read_file(path: str) -> list[dict]:
    """Records of one annotation file; a ConfigError naming the file when it cannot be read."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _READERS:
        raise ConfigError(f"{path}: unknown annotation format (expected one of {', '.join(EXTENSIONS)})")
    try:
        rows = _READERS[ext](path)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: record {n} is a {type(row).__name__}, expected an object")
    return rows


def read_records(path: str) -> list[tuple[str, dict[str, Any]]]:
    """[(source stem, record)] of a file, or of every annotation file in a folder (sorted by name)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(EXTENSIONS))
        if not files:
            raise ConfigError(f"{path}: no annotation files ({', '.join(EXTENSIONS)}) in the folder")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ConfigError(f"{path}: no such annotation file or folder")
    out = []
    for file in files:
        stem = os.path.splitext(os.path.basename(file))[0]
        out.extend((stem, row) for row in read_file(file))
    return out
