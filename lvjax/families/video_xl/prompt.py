"""Video-XL's prompt: conversation template `qwen_1_5` with `<image>\\n` + question as the first user turn.

`qwen_1_5` is CHATML with the system message "You are a helpful assistant." (the same text as
`lvjax.prompt.build_prompt` without a time message):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n{q}<|im_end|>\\n
    <|im_start|>assistant\\n

`tokenizer_image_token` puts -200 at `<image>`; the model replaces it with one placeholder id
(`vocab_size - 1` after the loader's resize) per visual token. `beacon_skip_first` is the
`<image>` index (14 for this template), `beacon_skip_last` = skip_first + visual tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from lvjax.prompt import build_prompt, tokenize_with_image


@dataclasses.dataclass(frozen=True)
class PromptIds:
    """prefix: ids before `<image>` (the sink); text: ids after the video; ids: with -200."""

    prefix: tuple[int, ...]
    text: tuple[int, ...]
    ids: tuple[int, ...]

    def expanded(self, placeholder: int, n_visual: int) -> np.ndarray:
        """What the original feeds the LLM: -200 replaced by `n_visual` placeholder ids (int64)."""
        return np.asarray([*self.prefix, *([placeholder] * n_visual), *self.text], np.int64)


def prompt_ids(tokenizer: Any, question: str, history: Sequence[tuple[str, str]] = ()) -> PromptIds:
    """Token ids of the `qwen_1_5` prompt about one video (earlier turns, oldest first, in `history`)."""
    ids, at = tokenize_with_image(build_prompt(question, "", history), tokenizer)
    return PromptIds(tuple(ids[:at]), tuple(ids[at + 1:]), tuple(ids))
