"""The ChatML prompt every family uses (qwen_2 for VideoChat-Flash, qwen_1_5 for the Video-XL family: the same text).

Text layout (CHATML, exactly as the original `Conversation.get_prompt` with `SeparatorStyle.CHATML`):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<image>\\n{time_msg.strip()} {question 1}<|im_end|>\\n
    <|im_start|>assistant\\n{answer 1}<|im_end|>\\n          (history turns, if any)
    <|im_start|>user\\n{question 2}<|im_end|>\\n
    <|im_start|>assistant\\n

Only the first user turn carries `<image>` and the time message (`chat()` with a history).
`tokenizer_image_token` tokenises the text on each side of `<image>` separately (no BPE merge
crosses it) and puts `IMAGE_TOKEN_INDEX` (-200) in its place; the visual block replaces it.
"""

from __future__ import annotations

import string
from typing import Any, Sequence

from lvjax.errors import ConfigError, UsageError
from lvjax.families.base import IMAGE_TOKEN_INDEX  # re-exported

DEFAULT_IMAGE_TOKEN = "<image>"
SYSTEM_PROMPT = "You are a helpful assistant."
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
USER_ROLE = IM_START + "user"
ASSISTANT_ROLE = IM_START + "assistant"
STOP_STRING = IM_END
MCQ_POST_PROMPT = "Answer with the option's letter from the given choices directly."


def render_chatml(messages: Sequence[tuple[str, str | None]], system: str = SYSTEM_PROMPT) -> str:
    """CHATML text of (role, message) pairs; role is "user" or "assistant".

    As the original: a falsy message (None or "") renders only the role header, so a final
    ("assistant", None) is the generation prompt `<|im_start|>assistant\\n`.
    """
    out = "" if system == "" else f"{IM_START}system\n{system}{IM_END}\n"
    for role, message in messages:
        if role not in ("user", "assistant"):
            raise UsageError(f"role must be 'user' or 'assistant', got {role!r}")
        header = IM_START + role
        out += f"{header}\n{message}{IM_END}\n" if message else f"{header}\n"
    return out


def video_user_turn(question: str, time_msg: str | None = "") -> str:
    """First user message with a video: `<image>\\n{time_msg.strip()} {question}` (HF `chat()`).

    Without a time message (a single image) it is `<image>\\n{question}`.
    """
    if not time_msg or not time_msg.strip():
        return f"{DEFAULT_IMAGE_TOKEN}\n{question}"
    return f"{DEFAULT_IMAGE_TOKEN}\n{time_msg.strip()} {question}"


def build_prompt(question: str, time_msg: str = "", history: Sequence[tuple[str, str]] = (),
                 system: str = SYSTEM_PROMPT) -> str:
    """The full `qwen_2` prompt for a question about one video, ending with the assistant header.

    time_msg: the message `load_video` returns (e.g. "\\nThe video lasts for 4.00 seconds, and 16
    frames are uniformly sampled from it. "); it is stripped. history: earlier (question, answer)
    pairs, oldest first, with bare questions; the first of them (or `question` when there is no
    history) gets the `<image>` and the time message.
    """
    messages: list[tuple[str, str | None]] = []
    for i, (q, a) in enumerate(history):
        messages.append(("user", video_user_turn(q, time_msg) if i == 0 else q))
        messages.append(("assistant", a))
    messages.append(("user", question if history else video_user_turn(question, time_msg)))
    messages.append(("assistant", None))
    return render_chatml(messages, system)


def multiple_choice(question: str, options: Sequence[str], post_prompt: str = MCQ_POST_PROMPT) -> str:
    """The lmms-eval MCQ question (LVBench/MLVU style): question, "\\n", "A. opt\\n" per option, post_prompt.

    e.g. "Q?\\nA. x\\nB. y\\nAnswer with the option's letter from the given choices directly."
    """
    if len(options) > len(string.ascii_uppercase):
        raise UsageError(f"at most 26 options, got {len(options)}")
    lines = "".join(f"{string.ascii_uppercase[i]}. {opt}\n" for i, opt in enumerate(options))
    return f"{question}\n{lines}{post_prompt}"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text).input_ids)


def tokenizer_image_token(prompt: str, tokenizer: Any, image_token_index: int = IMAGE_TOKEN_INDEX) -> list[int]:
    """Token ids of `prompt` with each `<image>` replaced by `image_token_index`.

    Like the original `mm_utils.tokenizer_image_token`: every chunk between placeholders is
    tokenised on its own (with the tokenizer's default special tokens); if the first chunk starts
    with the BOS id, one BOS is kept and the first id of every chunk is dropped.
    """
    chunks = [_ids(tokenizer, c) for c in prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = getattr(tokenizer, "bos_token_id", None)
    offset = 1 if (chunks and chunks[0] and bos is not None and chunks[0][0] == bos) else 0
    out: list[int] = [chunks[0][0]] if offset else []
    for i, chunk in enumerate(chunks):
        if i:
            out.append(image_token_index)
        out.extend(chunk[offset:])
    return out


def tokenize_with_image(prompt: str, tokenizer: Any) -> tuple[list[int], int]:
    """(ids with one IMAGE_TOKEN_INDEX, index of that placeholder) for a prompt with exactly one `<image>`."""
    n = prompt.count(DEFAULT_IMAGE_TOKEN)
    if n != 1:
        raise UsageError(f"the prompt must contain exactly one {DEFAULT_IMAGE_TOKEN}, found {n}")
    ids = tokenizer_image_token(prompt, tokenizer)
    return ids, ids.index(IMAGE_TOKEN_INDEX)


def assistant_header_ids(tokenizer: Any) -> list[int]:
    """Ids of `<|im_start|>` followed by the ids of "assistant" (one token in Qwen2: 151644, 77091)."""
    start = tokenizer.convert_tokens_to_ids(IM_START)
    if start is None or start == getattr(tokenizer, "unk_token_id", object()):
        raise ConfigError(f"the tokenizer has no {IM_START} token")
    word = list(tokenizer("assistant", add_special_tokens=False).input_ids)
    return [int(start)] + [int(t) for t in word]


def first_conv_length(ids: Sequence[int], tokenizer: Any, *, last: bool = False) -> int:
    """Index of the `<|im_start|>` of the assistant header `<|im_start|>assistant` in `ids`.

    As the original `get_first_conv_length`, the *first* occurrence (the end of the first user
    turn, the one holding the video); last=True gives the final (generation) header instead. The
    two agree for a single-turn prompt. Indices count the placeholder as one position.
    Raises ValueError when the header is absent.
    """
    pat = assistant_header_ids(tokenizer)
    ids = [int(t) for t in ids]
    hits = [i for i in range(len(ids) - len(pat) + 1) if ids[i:i + len(pat)] == pat]
    if not hits:
        raise ValueError(f"no {IM_START}assistant header (ids {pat}) in the prompt ids")
    return hits[-1] if last else hits[0]
