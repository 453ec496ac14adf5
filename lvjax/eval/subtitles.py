"""Subtitles for Video-MME and LongVideoBench, read from files and chosen as the originals do.

Video-MME ships one SubRip file per video, `subtitle/<videoID>.srt`, its text inside
`<font color="white" size=".72c">…</font>`; some videos have none. Two rules
(`lmms_eval/tasks/videomme/utils.py`, `videomme_doc_to_text_subtitle`):

- full (protocol videochat_flash: VideoChat-Flash's fork `lmms-eval_videochat`, task
  `videomme_w_subtitle`, which sets `gemini_api_flag: full subtitle`): the font text of every
  subtitle line, in file order.
- at frames (protocol video_xl2: Video-XL-2's `eval/lvu` copy, `frame_num: 128`; stock
  lmms-eval has the same rule with `frame_num: 32`):
  `frame_num` frames spread over the video, `np.linspace(0, frames - 1, frame_num, dtype=int)`;
  a cue covers frame f when int(start · fps) <= f < int(end · fps) (times as the original's
  `parse_subtitle_time`, fps and frame count of the file); each covering cue once, in cue
  order (the original's `list(set(...))`, ascending for small sets), by its first font text.
  A video without a subtitle file gets the text "No subtitles available".

LongVideoBench ships one JSON per video, named by the record's `subtitle_path`; the fork
reads `subtitles/<name>_en.json` (adding `_en` when the name lacks it). Entries are
{"timestamp": [start, end], "text"} (an end that is not a float — null, or an integer —
means the record's `duration`) or {"start": "HH:MM:SS.fff", "end", "line"}; times count from
`starting_timestamp_for_subtitles`. The fork's `insert_subtitles_into_frames` (without the
image markers) keeps, in file order, each subtitle whose span — widened to 1 s around its
middle when shorter — holds one of the frame times strictly inside; the frame times are
`compute_frame_timestamps(duration, 512)`: `duration / 512 · i` for i < 512 when the video
is longer than 512 s, else every whole second.

A malformed file raises a ConfigError naming it (the runner records it as an error item).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import timedelta
from typing import Sequence

import numpy as np

from lvjax.config import ConfigError

try:
    import srt
except ImportError:  # an environment installed before lvjax required it
    srt = None

FONT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')
NO_SUBTITLES = "No subtitles available"
LVB_FRAMES = 512  # the fork's `max_num_frames` default for the subtitle frame times


@dataclasses.dataclass(frozen=True)
class Cue:
    """One subtitle: start and end in seconds, its text (lines joined by newlines)."""

    start: float
    end: float
    text: str


def _seconds(t: timedelta) -> float:
    """Seconds as Video-MME's `parse_subtitle_time` computes them: whole seconds + milliseconds / 1000."""
    whole, ms = divmod(t // timedelta(milliseconds=1), 1000)
    return whole + ms / 1000


def read_srt(path: str) -> list[Cue]:
    """The cues of a SubRip file, in file order."""
    if srt is None:
        raise ConfigError(f"{path}: reading .srt subtitles needs the srt package (pip install srt)")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return [Cue(_seconds(s.start), _seconds(s.end), s.content) for s in srt.parse(text)]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the subtitle file ({e})") from None
    except srt.SRTParseError as e:
        line = text.count("\n", 0, e.expected_start) + 1
        first = (e.unmatched_content.strip().splitlines() or [""])[0][:60]
        raise ConfigError(f"{path}: malformed SubRip (.srt) subtitle file: no valid cue at line {line} "
                          f"({first!r} …)") from None


def font_text(text: str) -> str | None:
    """The text of the first Video-MME font tag in `text`, or None."""
    m = FONT.search(text)
    return m.group(1) if m else None


def videomme_full(cues: Sequence[Cue]) -> str:
    """The font text of every subtitle line, one per line (the fork's "full subtitle")."""
    lines = (font_text(line) for cue in cues for line in cue.text.split("\n"))
    return "\n".join(t for t in lines if t is not None)


def uniform_frames(num_frames: int, frame_num: int) -> list[int]:
    """`np.linspace(0, num_frames - 1, frame_num, dtype=int)`: the frames lmms-eval reads subtitles at."""
    return np.linspace(0, num_frames - 1, frame_num, dtype=int).tolist()


def videomme_at_frames(cues: Sequence[Cue], frames: Sequence[int], fps: float) -> str:
    """The first font text of each cue covering one of `frames` (source frame numbers at `fps`)."""
    spans = [(int(c.start * fps), int(c.end * fps)) for c in cues]
    chosen = sorted({k for f in frames for k, (lo, hi) in enumerate(spans) if lo <= f < hi})
    texts = (font_text(cues[k].text.replace("\n", " ")) for k in chosen)
    return "\n".join(t for t in texts if t is not None)


def lvb_path(folder: str, subtitle_path: str) -> str:
    """The fork's file for a record's `subtitle_path`: `_en.json` added when missing."""
    name = subtitle_path if "_en.json" in subtitle_path else subtitle_path.replace(".json", "_en.json")
    return os.path.join(folder, name)


def _timestamp(value, where: str) -> float:
    try:
        h, m, s = str(value).split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        raise ConfigError(f"{where}: time {value!r} is not HH:MM:SS.fff") from None


def read_lvb(path: str, duration: float) -> list[Cue]:
    """The subtitles of a LongVideoBench JSON file (times not yet shifted by the record's start)."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the subtitle file ({e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a JSON list of subtitles, got {type(entries).__name__}")
    cues = []
    for n, e in enumerate(entries):
        where = f"{path} subtitle {n}"
        if isinstance(e, dict) and isinstance(e.get("timestamp"), list) and len(e["timestamp"]) == 2 and "text" in e:
            start, end = e["timestamp"]
            if not isinstance(start, (int, float)):
                raise ConfigError(f"{where}: start time {start!r} is not a number")
            cues.append(Cue(float(start), end if isinstance(end, float) else float(duration), str(e["text"])))
        elif isinstance(e, dict) and {"start", "end", "line"} <= set(e):
            cues.append(Cue(_timestamp(e["start"], where), _timestamp(e["end"], where), str(e["line"])))
        else:
            raise ConfigError(f"{where}: expected {{timestamp: [start, end], text}} or {{start, end, line}}")
    return cues


def lvb_frame_times(duration: float, max_frames: int = LVB_FRAMES) -> list[float]:
    """The fork's `compute_frame_timestamps`: the seconds the subtitles are matched against."""
    if duration > max_frames:
        return [duration / max_frames * i for i in range(max_frames)]
    return [float(i) for i in range(int(duration))]


def lvb_select(cues: Sequence[Cue], frame_times: Sequence[float], offset: float = 0.0) -> str:
    """The texts of the subtitles (shifted by -offset) whose span holds a frame time, one per line."""
    kept = []
    for cue in cues:
        start, end = cue.start - offset, cue.end - offset
        if end - start < 1:
            middle = (start + end) / 2
            start, end = middle - 0.5, middle + 0.5
        if any(start < t < end for t in frame_times):
            kept.append(cue.text)
    return "\n".join(kept)
