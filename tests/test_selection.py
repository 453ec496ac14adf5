"""QC-Comp: chunk grid, window scoring (vs a per-window plain loop and the recorded original), selection."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvjax.config import LLMConfig
from lvjax.families.videochat_flash.selection import (
    EDGE,
    QCCompConfig,
    chunk_frames,
    chunk_starts,
    frame_scores,
    layer_clip_scores,
    select_frames,
)


def _starts_grid(T, d, stride=512, clip=8):
    """The chunk grid as a (repeat, round) table: round r of repeat j starts at (j·R + r)·stride + j·(clip/d + stride/d),
    R rounds per repeat (the original indexes chunks globally, so each repeat also moves by R·stride mod T)."""
    n_rounds = -(-T // stride)
    rounds = np.arange(n_rounds) * stride
    shifts = np.arange(d) * (n_rounds * stride + clip // d + stride // d)
    return ((shifts[:, None] + rounds[None, :]) % T).ravel().tolist()


@pytest.mark.parametrize("T,d", [(1024, 2), (1024, 8), (1500, 2), (3000, 3), (4096, 1)])
def test_chunk_starts_and_wrap(T, d):
    qc = QCCompConfig(n_repeat=d)
    starts = chunk_starts(T, qc)
    assert starts == _starts_grid(T, d)
    for s in starts:
        idx = chunk_frames(T, s, qc)
        expect = list(range(s, min(T, s + 576))) + list(range(0, max(0, s + 576 - T)))
        assert idx.tolist() == expect


# ---------------------------------------------------------------- plain per-window reference (numpy)


def _rope_np(x, pos, theta, scale=1.0):
    d = x.shape[-1]
    inv = 1.0 / (theta ** (np.arange(0, d, 2) / d))
    ang = pos[:, None] * inv[None]
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def _window_scores_loop(p, cfg, hidden, P, nv, n_clips, text_end, qc):
    """Each window alone: build [prefix, window, text], run the layer's attention, read the clips."""
    hidden = hidden.astype(np.float64)
    clip_len = nv // n_clips
    a, b = qc.window_clips, qc.window_stride
    per_clip = [[] for _ in range(n_clips)]
    for p1 in range(0, n_clips, b):
        if p1 + a > n_clips:
            break
        part = np.concatenate([hidden[:P], hidden[P + p1 * clip_len: P + (p1 + a) * clip_len], hidden[P + nv: text_end]])
        var = (part ** 2).mean(-1, keepdims=True)
        h = part / np.sqrt(var + cfg.rms_norm_eps) * p["input_layernorm"]["scale"]
        at = p["self_attn"]
        pos = np.arange(len(part), dtype=np.float64)
        q = (h @ at["q_proj"]["kernel"] + at["q_proj"]["bias"]).reshape(len(part), cfg.num_attention_heads, -1)
        k = (h @ at["k_proj"]["kernel"] + at["k_proj"]["bias"]).reshape(len(part), cfg.num_key_value_heads, -1)
        q, k = _rope_np(q, pos, cfg.rope_theta), _rope_np(k, pos, cfg.rope_theta)
        g = cfg.num_attention_heads // cfg.num_key_value_heads
        k = np.repeat(k, g, axis=1)
        logits = np.einsum("thd,shd->hts", q, k) / math.sqrt(cfg.head_dim)
        if qc.causal:
            logits = np.where(np.tril(np.ones((len(part), len(part)), bool))[None], logits, -np.inf)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs = (probs / probs.sum(-1, keepdims=True)).mean(0)
        im_end = P + a * clip_len
        for i in range(p1, p1 + a):
            s = P + (i - p1) * clip_len
            per_clip[i].append(probs[im_end + qc.query_bias:, s: s + clip_len].mean())
    most = max(len(v) for v in per_clip)
    return np.array([EDGE if len(v) < most else sum(v) / len(v) for v in per_clip])


def _random_layer(cfg, seed):
    rng = np.random.RandomState(seed)
    d, hq, hk, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    dense = lambda i, o, s: {"kernel": rng.randn(i, o).astype(np.float32) * s, "bias": rng.randn(o).astype(np.float32) * 0.3}  # noqa: E731
    return {
        "input_layernorm": {"scale": rng.uniform(0.5, 1.5, d).astype(np.float32)},
        "self_attn": {"q_proj": dense(d, hq * hd, 1.5 / d**0.5), "k_proj": dense(d, hk * hd, 1.5 / d**0.5)},
    }


@pytest.mark.parametrize(
    "n_clips,clip_len,n_text,heads,kv,causal",
    [(8, 16, 40, 4, 2, False), (16, 8, 35, 4, 4, False), (12, 5, 31, 8, 1, True), (17, 3, 30, 4, 2, False)],
)
def test_window_scores_match_plain_loop(n_clips, clip_len, n_text, heads, kv, causal):
    cfg = LLMConfig(vocab_size=8, hidden_size=32, intermediate_size=8, num_hidden_layers=1,
                    num_attention_heads=heads, num_key_value_heads=kv, rope_theta=1e4)
    qc = QCCompConfig(causal=causal)
    P, nv = 14, n_clips * clip_len
    hidden = np.random.RandomState(1).randn(P + nv + n_text, 32).astype(np.float32)
    layer = _random_layer(cfg, 2)
    got = np.asarray(layer_clip_scores(jax.tree.map(jnp.asarray, layer), cfg, jnp.asarray(hidden), visual_start=P,
                                       n_visual=nv, n_clips=n_clips, text_end=P + nv + n_text, qc=qc))
    want = _window_scores_loop(layer, cfg, hidden, P, nv, n_clips, P + nv + n_text, qc)
    np.testing.assert_array_equal(got >= EDGE, want >= EDGE)
    inner = want < EDGE
    np.testing.assert_allclose(got[inner], want[inner], rtol=1e-4)


def test_window_scores_match_original(tiny_vcf_dir, ref):
    from lvjax.convert.hf import read_hf_folder
    from lvjax.convert.llm import llm_rules
    from lvjax.convert.table import hf_to_lvjax

    hf, tensors = read_hf_folder(str(tiny_vcf_dir), progress=False)
    cfg = LLMConfig.from_hf(hf)
    text = {k: v for k, v in tensors.items() if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    params = hf_to_lvjax(text, llm_rules(cfg), ignore={"lm_head.weight"})
    want = ref["qc128/clip_scores"]
    ids = ref["qc128/input_ids"]
    P = int(np.where(ids == -200)[0][0])
    n_after = len(ids) - P - 1 - 3  # text after <image> up to <|im_start|>assistant\n (3 tokens)
    for layer, per_frame in ((0, 16), (12, 9), (24, 1)):
        nv = 128 * per_frame
        got = np.asarray(layer_clip_scores(jax.tree.map(lambda a: a[layer], params["layers"]), cfg,
                                           jnp.asarray(ref[f"qc128/layer_input_hidden_L{layer}"]), visual_start=P,
                                           n_visual=nv, n_clips=16, text_end=P + nv + n_after, qc=QCCompConfig()))
        np.testing.assert_array_equal(got >= EDGE, want[layer] >= EDGE)
        inner = want[layer] < EDGE
        np.testing.assert_allclose(got[inner], want[layer][inner], rtol=1e-4)


def test_aggregation_and_selection_match_original(ref):
    qc = QCCompConfig(n_select=128)
    starts = [int(s) for s in ref["qcfull/segment_starts"]]
    assert starts == chunk_starts(1024, qc)
    scores = frame_scores(ref["qcfull/segment_clip_scores"], starts, 1024, qc)
    np.testing.assert_allclose(scores, ref["qcfull/frame_score"], rtol=1e-12)
    picked = select_frames(scores, 128)
    np.testing.assert_array_equal(picked, ref["qcfull/selected_idx"])
    assert (np.diff(picked) > 0).all()


def test_frame_scores_match_plain_loop():
    qc = QCCompConfig(first_layer=1, last_layer=3)
    T = 1100
    starts = chunk_starts(T, qc)
    rng = np.random.RandomState(0)
    chunk = rng.rand(len(starts), 4, 72)
    chunk[:, :, :4] = EDGE
    chunk[:, :, -4:] = EDGE
    chunk[0, 2, 10] = np.nan
    got = frame_scores(chunk, starts, T, qc)
    lists = [[[] for _ in range(T)] for _ in range(4)]
    for c, s in enumerate(starts):
        for layer in range(4):
            for i in range(576):
                v = chunk[c, layer, i // 8]
                if v == v and v < 1000:
                    lists[layer][(i + s) % T].append(v)
    want = [sum(sum(lists[l][f]) / len(lists[l][f]) for l in range(1, 3)) for f in range(T)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_select_frames_stable_ties():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    np.testing.assert_array_equal(select_frames(scores, 3), [0, 1, 3])
