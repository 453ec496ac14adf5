"""QC-Comp end to end: chunk scoring through the whole LLM vs the original, and the answer path."""

import jax.numpy as jnp
import numpy as np
import pytest

import lvjax
from lvjax.families.base import IMAGE_TOKEN_INDEX
from lvjax.families.videochat_flash import answer as runner
from lvjax.families.videochat_flash.selection import (
    EDGE,
    QCCompConfig,
    chunk_clip_scores,
    chunk_frames,
    chunk_starts,
    frame_scores,
    select_frames,
)
from lvjax.prompt import first_conv_length
from lvjax.testing.tiny import build_tiny_videochat_flash


def test_chunk_scores_through_all_layers_match_original(tiny_vcf_dir, ref):
    """The 128-frame recording: prefill with LP-Comp, clip scores at all 28 layers."""
    model = lvjax.load(str(tiny_vcf_dir))
    x = jnp.asarray(ref["qc128/layer_input_hidden_L0"])[None]  # layer 0's input = the spliced prompt
    ids = ref["qc128/input_ids"]
    v0 = int(np.where(ids == -200)[0][0])
    n_after = len(ids) - v0 - 1 - 3  # up to <|im_start|>assistant\n
    got = np.asarray(chunk_clip_scores(model.params["llm"], x, cfg=model.config.llm,
                                       drops=runner.drops(model.config, "xcomp_cosine", 2048), visual_start=v0, n_visual=2048,
                                       n_clips=16, n_after=n_after, qc=QCCompConfig()))
    want = ref["qc128/clip_scores"]
    np.testing.assert_array_equal(got >= EDGE, want >= EDGE)
    inner = want < EDGE
    np.testing.assert_allclose(got[inner], want[inner], rtol=1e-4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_videochat_flash(path, layers=4, vision=dict(image_size=64))
    return lvjax.load(str(path))


QC = QCCompConfig(n_select=8, n_repeat=2, threshold=64, stride=16, window_clips=4, window_stride=2, clip_frames=2,
                  query_bias=3, first_layer=1, last_layer=3)


def test_answer_with_qc_comp_scores_raw_frames_once(tiny):
    """Selection runs on raw frames: no full encode first, every clip through the ViT once, and the
    picks equal the original's procedure written plainly here (each chunk encoded on its own)."""
    video = np.random.RandomState(0).randint(0, 256, (64, 64, 64, 3), np.uint8)
    calls = []
    real = runner.encode_frames

    def counting(*args, **kw):
        calls.append(len(args[2]))
        return real(*args, **kw)

    runner.encode_frames = counting
    try:
        text, report = tiny.answer(video, "What is shown?", fps=8.0, qc=QC, compression="xcomp_cosine",
                                   max_new_tokens=6)
    finally:
        runner.encode_frames = real
    picked = report["qc_selected_frames"]
    assert len(picked) == 8 and picked == sorted(picked) and report["qc_chunks"] == 8
    assert report["visual_tokens"] == 8 * 16 and "seconds_vision" not in report  # no full encode
    assert sum(calls) == report["qc_frames_encoded"]
    # The clips a chunk grid can contain: one ViT pass per distinct clip, never more.
    L, T = tiny.config.local_num_frames, 64
    starts = chunk_starts(T, QC)
    clips = {tuple(chunk_frames(T, s, QC)[i:i + L]) for s in starts for i in range(0, QC.chunk_frames, L)}
    assert report["qc_frames_encoded"] <= L * (len(clips) + len(picked) // L)
    # Reference: the original encodes each chunk's frames separately and scores it.
    frames = tiny.frames(video, fps=8.0)
    prefix, suffix = runner.prompt_ids(tiny.tokenizer, "What is shown?", frames.time_msg, ())
    n_visual = QC.chunk_frames * 16
    n_after = first_conv_length(prefix + [IMAGE_TOKEN_INDEX] + suffix, tiny.tokenizer) - len(prefix) - 1
    ids = jnp.asarray([prefix + [0] * n_visual + suffix], jnp.int32)
    scores = []
    for s in starts:
        visual = real(tiny.params, tiny.config, frames.frames[chunk_frames(T, s, QC)], clip_len=L, bucketed=False)[0]
        x = runner.vcf.splice(tiny.params, tiny.config, ids, visual[None], len(prefix))
        scores.append(np.asarray(chunk_clip_scores(tiny.params["llm"], x, cfg=tiny.config.llm,
                                                   drops=runner.drops(tiny.config, "xcomp_cosine", n_visual),
                                                   visual_start=len(prefix), n_visual=n_visual,
                                                   n_clips=n_visual // (QC.clip_frames * 16), n_after=n_after, qc=QC)))
    assert picked == select_frames(frame_scores(np.stack(scores), starts, T, QC), QC.n_select).tolist()
