"""Where the timestamp groups lie in the spliced Video-XL-2 prompt.

The visual block that replaces `<image>` is, per group of 4 frames, the tokens of
`"Time {t}s:"` followed by 144 `<|vision_pad|>` slots (filled with visual tokens). The
original (`LlavaQwenForCausalLM.generate`, eval/lvu/*) reads the group boundaries off the
`time_embedding` ids: a group starts at each `"Time"` id, its time text ends after each `':'`
id, and *every* non-`vision_pad` id is a time token.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lvjax.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Group:
    """One timestamp group: time tokens [time_start, time_end), visual tokens [time_end, end)."""

    time_start: int
    time_end: int
    end: int


@dataclasses.dataclass(frozen=True)
class VisualSpans:
    """Token positions of one spliced prompt (absolute indices into the LLM sequence).

    prefix = [0, visual_start) (system + user header), visual = [visual_start, visual_end),
    suffix = [visual_end, total_len) (question + assistant header). `frames` is the *unpadded*
    sampled frame count, which sets the number of prefill chunks.
    """

    visual_start: int
    visual_end: int
    total_len: int
    groups: tuple[Group, ...]
    frames: int

    @property
    def time_token_starts(self) -> list[int]:
        return [g.time_start for g in self.groups]

    @property
    def time_token_ends(self) -> list[int]:
        return [g.time_end for g in self.groups]

    @property
    def suffix_len(self) -> int:
        return self.total_len - self.visual_end

    def time_tokens(self) -> np.ndarray:
        """(n,) int64 positions of all time tokens."""
        parts = [np.arange(g.time_start, g.time_end) for g in self.groups]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def visual_spans(time_embedding: np.ndarray, visual_start: int, total_len: int, frames: int, *,
                 time_id: int, colon_id: int, pad_id: int) -> VisualSpans:
    """Group boundaries from the visual block's ids `time_embedding` (N,) spliced at `visual_start`.

    Raises ConfigError when the ids are not the "Time … :" + pads layout the original assumes
    (a group start without its ':' or a non-pad id outside the time texts).
    """
    ids = np.asarray(time_embedding).reshape(-1)
    end = visual_start + len(ids)
    if end > total_len:
        raise ConfigError(f"visual block [{visual_start}, {end}) runs past the prompt length {total_len}")
    starts = (np.flatnonzero(ids == time_id) + visual_start).tolist()
    ends = (np.flatnonzero(ids == colon_id) + visual_start + 1).tolist()
    if not starts or len(starts) != len(ends) or ids[0] != time_id:
        raise ConfigError(f"time_embedding: expected groups 'Time … :' + vision pads; found {len(starts)} 'Time' "
                          f"id(s) {time_id} and {len(ends)} ':' id(s) {colon_id}, first id {int(ids[0]) if len(ids) else None}")
    nexts = starts[1:] + [end]
    groups = tuple(Group(s, e, n) for s, e, n in zip(starts, ends, nexts))
    for g in groups:
        if not g.time_start < g.time_end <= g.end:
            raise ConfigError(f"time_embedding: group at {g.time_start} has its ':' at {g.time_end - 1}, outside the group")
    spans = VisualSpans(visual_start, end, total_len, groups, int(frames))
    text = np.flatnonzero(ids != pad_id) + visual_start
    if not np.array_equal(text, spans.time_tokens()):
        raise ConfigError("time_embedding: non-vision_pad ids lie outside the 'Time … :' texts")
    return spans


def synthetic_spans(frames: int, prefix: int = 14, time_tokens: int = 10, visual: int = 144,
                    suffix: int = 61) -> VisualSpans:
    """The spans of a prompt of the release's shape (14 prefix tokens, per group of 4 frames 10 time tokens +
    144 visual tokens, a 61-token question) without ids: for benchmarks and layout tests at any length."""
    groups, pos = [], prefix
    for _ in range(-(-frames // 4)):
        groups.append(Group(pos, pos + time_tokens, pos + time_tokens + visual))
        pos += time_tokens + visual
    return VisualSpans(prefix, pos, pos + suffix, tuple(groups), frames)
