"""Answer parsers, one per original evaluation script (re-implemented from their rules).

Each parser maps a raw generated text to the value the original compares with the ground
truth. The originals' quirks are kept on purpose, because they change the scores:

- `mcq_letter`: VideoChat-Flash/XComp lmms-eval fork, `tasks/{mlvu_mc,lvbench,mvbench}/utils.py`
  `mcq_acc.process` — "A. text" gives "A"; otherwise punctuation is stripped the VQA way and the
  first standalone letter A–E (case-insensitive, so the word "a" counts) is taken; with none,
  the normalised lowercase text is returned (it then never equals a letter).
- `videomme_letter`: `tasks/videomme/utils.py` `extract_characters_regex` — drop the answer
  prefixes, "" for more than 10 words without A–D, else the first capital A–D anywhere.
- `lvb_choice`: `tasks/longvideobench/utils.py` `parse_multi_choice_response` (MMMU) — "(X)",
  then "X ", then "X.", then option text for long answers; the last mention wins among several;
  no candidate → a random option. The random pick is seeded by the item id here (deterministic).
- `paren_letter`: Video-XL-2 `eval/lvu/.../mlvu/utils.py` `extract_characters_regex` — the
  character before the first ")" (the prompt ends with "Best option: ("), else the stripped text.
- `first_paren_group`: Video-XL `eval/eval_vnbench.py` — the content of the first "(...)", else
  the whole text.
- `dot_letter`: Video-XL-2 `tasks/vnbench/utils.py` `extract_characters_regex` — the text before
  the first ".", reduced to the first of A, B, C, D it contains (checked in that order).
- `interval`: Charades-STA — the first two numbers (seconds) of the text, as (start, end).
"""

from __future__ import annotations

import random
import re
import string
from typing import Sequence

_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the original's look-behind is a look-ahead
_OPTION_DOT = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_LONE_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)


def _vqa_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if p + " " in text or " " + p in text or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, 32)  # the original passes re.UNICODE (32) as `count`


def mcq_letter(text: str) -> str:
    """`mcq_acc`'s normalisation: an upper-case letter A–E, or the normalised lowercase text."""
    match = _OPTION_DOT.match(text.strip())
    if match:
        return match.group(1).upper()
    text = _vqa_punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    text = text.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = _LONE_LETTER.search(text)
    return letter.group(1).upper() if letter else text


_VIDEOMME_PREFIXES = ["The best answer is", "The correct answer is", "The answer is", "The answer",
                      "The best option isThe correct option is", "Best answer:Best option:"]  # sic: missing commas


def videomme_letter(text: str) -> str:
    """`extract_characters_regex` of Video-MME: "A"–"D" or ""."""
    text = text.strip()
    for prefix in _VIDEOMME_PREFIXES:
        text = text.replace(prefix, "")
    if len(text.split()) > 10 and not re.search("[ABCD]", text):
        return ""
    match = re.search(r"[ABCD]", text)
    return match[0] if match else ""


def lvb_choice(text: str, options: Sequence[str], seed: str = "") -> str:
    """`parse_multi_choice_response` over letters A.. for `options`; random (seeded) when nothing matches."""
    letters = list(string.ascii_uppercase[: len(options)])
    by_letter = dict(zip(letters, options))
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        text = text.strip(char)
    text = f" {text} "
    candidates = [c for c in letters if f"({c})" in text]
    bracketed, by_content = bool(candidates), False
    if not candidates:
        candidates = [c for c in letters if f"{c} " in text]
    if not candidates:
        candidates = [c for c in letters if f"{c}." in text]
    if not candidates and len(text.split()) > 5:
        candidates = [c for c in letters if by_letter[c].lower() in text.lower()]
        by_content = bool(candidates)
    if not candidates:
        return random.Random(seed).choice(letters)
    if len(candidates) == 1:
        return candidates[0]
    if by_content:
        starts = [text.lower().rfind(by_letter[c].lower()) for c in candidates]
    elif bracketed:
        starts = [text.rfind(f"({c})") for c in candidates]
    else:
        starts = [text.rfind(f" {c} ") for c in candidates]
    return candidates[starts.index(max(starts))]


def paren_letter(text: str) -> str:
    """Video-XL-2's MLVU rule: the character before the first ")", else the stripped text."""
    text = text.strip()
    if ")" in text:
        i = text.index(")")
        return text[i - 1:i]
    return text


def first_paren_group(text: str) -> str:
    """Video-XL's VNBench rule: the content of the first "(...)", else the whole text."""
    groups = re.findall(r"\((.*?)\)", text)
    return groups[0] if groups else text


def dot_letter(text: str) -> str:
    """Video-XL-2's VNBench rule: the part before the first "." reduced to A/B/C/D if it holds one."""
    head = text.strip().split(".")[0]
    for letter in "ABCD":
        if letter in head:
            return letter
    return head


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def interval(text: str) -> tuple[float, float] | None:
    """(start, end) seconds from the first two numbers of the text (sorted), or None."""
    numbers = [float(x) for x in _NUMBER.findall(text)[:2]]
    if len(numbers) < 2:
        return None
    return (min(numbers), max(numbers))


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union of two (start, end) intervals in seconds."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def first_word(text: str) -> str:
    """The first word of a short answer, lower case, without punctuation ("Left." → "left"); "" if none."""
    words = re.findall(r"[A-Za-z0-9]+", text or "")
    return words[0].lower() if words else ""
