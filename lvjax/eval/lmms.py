"""lmms-eval model plugin: `lmms-eval --model lvjax --model_args pretrained=DIR[,max_frames=64,...]`.

Registered through the `lmms_eval.models` entry point (`manifest`, lmms-eval ≥ 0.4's
ModelManifest) and, for older versions, `register_model("lvjax")`. Any lvjax family works:
the handle is `lvjax.load(pretrained)`. Requests are answered one at a time (batch size 1) from
the first video path that the task's `doc_to_visual` returns, inside the `start`/`end` seconds
of a media dict beside it (VideoChat-Flash's fork: MVBench, MLVU); generation kwargs
`max_new_tokens` and `do_sample` are honoured. Loglikelihood tasks are not supported.
"""

from __future__ import annotations

from typing import Any

import lvjax
from lvjax.eval.runner import answer_options

try:
    from lmms_eval.api.model import lmms as _Base
except ImportError:  # lmms-eval not installed: the class still imports (and documents itself)
    _Base = object


def _video_of(visuals: Any) -> tuple[str, dict]:
    """The first video path of `doc_to_visual`'s list, and start/end from a media dict in it."""
    items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
    media = next((v for v in items if isinstance(v, dict)), {})
    bound = {k: float(media[k]) for k in ("start", "end") if media.get(k) is not None}
    for v in items:
        if isinstance(v, str):
            return v, bound
    raise ValueError(f"lvjax's lmms-eval model needs a video path from doc_to_visual, got {type(visuals).__name__}")


class LvjaxLMM(_Base):
    """An lvjax model as an lmms-eval `lmms`: generate_until / generate_until_multi_round over video paths."""

    def __init__(self, pretrained: str, max_frames: int | None = None, min_frames: int | None = None,
                 fps: float | None = None, compression: str | None = None, batch_size: int = 1, **_: Any) -> None:
        if _Base is not object:
            super().__init__()
        if int(batch_size) != 1:
            raise ValueError(f"lvjax answers one request at a time; batch_size={batch_size}")
        self.model = lvjax.load(pretrained)
        self.options = answer_options(max_frames=None if max_frames is None else int(max_frames),
                                      min_frames=None if min_frames is None else int(min_frames),
                                      fps=None if fps is None else float(fps), compression=compression)
        self.batch_size_per_gpu = 1

    def _answer(self, context: str, gen_kwargs: dict, doc_to_visual, doc_id, task: str, split: str) -> str:
        video, bound = _video_of(doc_to_visual(self.task_dict[task][split][doc_id]))
        opts = {**self.options, **bound}
        if gen_kwargs.get("max_new_tokens"):
            opts["max_new_tokens"] = int(gen_kwargs["max_new_tokens"])
        if gen_kwargs.get("do_sample"):
            opts["do_sample"] = True
        return self.model.answer(video, context, **opts)[0]

    def generate_until(self, requests) -> list[str]:
        """requests[i].args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
        return [self._answer(*r.args[:6]) for r in requests]

    def generate_until_multi_round(self, requests) -> list[str]:
        """requests[i].args = (context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split); first round."""
        out = []
        for r in requests:
            context, gen_kwargs, doc_to_visual, _doc_to_text, doc_id, task, split = r.args[:7]
            out.append(self._answer(context, gen_kwargs, doc_to_visual, doc_id, task, split))
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("lvjax's lmms-eval model only generates (no loglikelihood tasks)")


def manifest():
    """The `lmms_eval.models` entry point: lmms-eval's ModelManifest for `--model lvjax`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="lvjax", simple_class_path="lvjax.eval.lmms.LvjaxLMM")


try:  # lmms-eval < 0.4 registers models by decorator
    from lmms_eval.api.registry import register_model

    register_model("lvjax")(LvjaxLMM)
except (ImportError, AttributeError):
    pass
