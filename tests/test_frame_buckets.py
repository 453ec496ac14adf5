"""Frame-count buckets: videos of different lengths in one bucket compile each stage once, same answers."""

import copy
import dataclasses

import jax
import numpy as np
import pytest

import lvjax
from lvjax.families.base import Encoded
from lvjax.families.videochat_flash import answer as runner
from lvjax.testing.tiny import build_tiny_videochat_flash


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_videochat_flash(path, layers=2, vision=dict(image_size=64, num_hidden_layers=2))
    return lvjax.load(str(path))


class _Compiles:
    """Counts XLA backend compilations while active."""

    def __init__(self):
        self.n = 0
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, _duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            self.n += 1


def test_frame_bucket_sizes():
    assert {runner.frame_bucket(n, 4) for n in (40, 48, 50, 56, 60)} == {64}
    assert runner.frame_bucket(3, 4) == 16 and runner.frame_bucket(600, 8) == 1024
    assert all(runner.frame_bucket(n, 8) % 8 == 0 and runner.frame_bucket(n, 8) >= n for n in range(1, 2000, 37))


def _with_impl(model, impl: str):
    """The model with its LLM attention forced to `impl` (the prefill takes a layout: `llm.use_kernels`)."""
    if impl == "auto":
        return model
    forced = copy.copy(model)
    forced.config = dataclasses.replace(model.config, llm=model.config.llm.replace(attention_impl=impl))
    return forced


@pytest.mark.parametrize("impl,compression", [
    # CI time (20-minute budget): the blockwise case runs in `make test-all`; the packed prompt's single
    # compile on the blockwise path stays in CI through test_llm_kernels::test_packed_generation_equals_dense.
    ("auto", "none"), pytest.param("blockwise", "none", marks=pytest.mark.heavy),
    pytest.param("auto", "xcomp_cosine", marks=pytest.mark.heavy),
    pytest.param("blockwise", "xcomp_cosine", marks=pytest.mark.heavy),
    pytest.param("pallas_interpret", "none", marks=pytest.mark.heavy)])
def test_one_bucket_compiles_once_and_answers_as_unpadded(tiny, impl, compression):
    """Also on the layout paths: the packed prompt's padding is no part of the static layout."""
    tiny = _with_impl(tiny, impl)
    rng = np.random.RandomState(0)
    videos = [rng.randint(0, 256, (n, 24, 24, 3), np.uint8) for n in (40, 50, 60)]
    compiles = _Compiles()
    answers = [tiny.answer(v, "What is shown?", fps=2.0, compression=compression, max_new_tokens=4)[1]["token_ids"]
               for v in videos[:1]]
    after_first = compiles.n
    answers += [tiny.answer(v, "What is shown?", fps=2.0, compression=compression, max_new_tokens=4)[1]["token_ids"]
                for v in videos[1:]]
    assert after_first > 0 and compiles.n == after_first, "a second video in the bucket compiled again"
    for v, got in zip(videos, answers):
        frames = tiny.frames(v, fps=2.0)
        visual, n_valid, _, _ = runner.encode_frames(tiny.params, tiny.config, frames.frames, clip_len=4,
                                                     bucketed=False)
        assert n_valid == visual.shape[0]
        _, report = tiny.answer_encoded(Encoded(visual, frames, {}, n_valid=n_valid), "What is shown?",
                                        compression=compression, max_new_tokens=4)
        assert report["token_ids"] == got
