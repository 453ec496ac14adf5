"""QC-Comp end to end: chunk scoring through the whole LLM vs the original, and the answer path."""

import jax.numpy as jnp
import numpy as np
import pytest
from lvjax.answer import EncodedVideo

import lvjax
from lvjax.families.videochat_flash.selection import (
    EDGE,
    QCCompConfig,
    chunk_clip_scores,
)
from lvjax.testing.tiny import build_tiny_videochat_flash


def test_chunk_scores_through_all_layers_match_original(tiny_vcf_dir, ref):
    """The 128-frame recording: prefill with LP-Comp, clip scores at all 28 layers."""
    model = lvjax.load(str(tiny_vcf_dir))
    x = jnp.asarray(ref["qc128/layer_input_hidden_L0"])[None]  # layer 0's input = the spliced prompt
    ids = ref["qc128/input_ids"]
    v0 = int(np.where(ids == -200)[0][0])
    n_after = len(ids) - v0 - 1 - 3  # up to <|im_start|>assistant\n
    got = np.asarray(chunk_clip_scores(model.params["llm"], x, cfg=model.config.llm,
                                       drops=model.drops("xcomp_cosine", 2048), visual_start=v0, n_visual=2048,
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


def test_answer_with_qc_comp_uses_selected_frames(tiny):
    qc = QCCompConfig(n_select=8, n_repeat=2, threshold=64, stride=16, window_clips=4, window_stride=2, clip_frames=2,
                      query_bias=3, first_layer=1, last_layer=3)
    frames = np.random.RandomState(0).randint(0, 256, (64, 64, 64, 3), np.uint8)
    time_msg = "\nThe video lasts for 8.00 seconds, and 64 frames are uniformly sampled from it. "
    visual, _ = tiny._encode(frames)
    encoded = EncodedVideo(visual, frames, 64, 8.0, time_msg, {})
    text, report = tiny.answer_encoded(encoded, "What is shown?", qc=qc, compression="xcomp_cosine", max_new_tokens=6)
    picked = report["qc_selected_frames"]
    assert len(picked) == 8 and picked == sorted(picked) and report["qc_chunks"] == 8
    assert report["visual_tokens"] == 8 * 16
    # The same answer as asking directly about the selected frames with the unchanged prompt.
    sub, _ = tiny._encode(frames[picked])
    direct, _ = tiny.answer_encoded(EncodedVideo(sub, frames[picked], 64, 8.0, time_msg, {}), "What is shown?",
                                    compression="xcomp_cosine", max_new_tokens=6)
    assert text == direct
