"""ToMe: vs a plain-loop NumPy version written from the paper, vs torch, and vs the fixture."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lvjax.models.tome import merge_clips, merge_schedule
from tests.torch_umt import torch_tome

# ----------------------------------------------------------------------------- plain-loop reference


def loop_tome(x: np.ndarray, heads: int, target: int):
    """Bipartite soft matching with Python loops over tokens (one clip, float64 bookkeeping).

    Returns (tokens (target, C) float32, sizes (target,), assign (N,)). Ties in the edge order
    keep the lower a index first (Python's sort is stable).
    """
    tokens = [np.asarray(t, np.float32) for t in x]
    sizes = [1.0] * len(tokens)
    members = [[j] for j in range(len(tokens))]  # input tokens inside each current token
    while len(tokens) > target:
        p = len(tokens)
        r = min(p // 2, p - target)
        c = tokens[0].shape[0]
        metric = []
        for t in tokens:
            m = t.reshape(heads, c // heads).mean(axis=0)
            metric.append(m / np.sqrt(np.sum(m * m, dtype=np.float32)))
        a_ids = list(range(0, p, 2))
        b_ids = list(range(1, p, 2))
        best, best_score = [], []
        for i in a_ids:
            top, top_j = -np.inf, -1
            for jj, j in enumerate(b_ids):
                s = float(np.dot(metric[i].astype(np.float64), metric[j].astype(np.float64)))
                if s > top:
                    top, top_j = s, jj
            best.append(top_j)
            best_score.append(top)
        order = sorted(range(len(a_ids)), key=lambda k: -best_score[k])
        merged, kept = order[:r], order[r:]
        sum_x = {jj: tokens[b_ids[jj]].astype(np.float64) * sizes[b_ids[jj]] for jj in range(len(b_ids))}
        sum_s = {jj: sizes[b_ids[jj]] for jj in range(len(b_ids))}
        mem_b = {jj: list(members[b_ids[jj]]) for jj in range(len(b_ids))}
        for k in merged:
            i, jj = a_ids[k], best[k]
            sum_x[jj] = sum_x[jj] + tokens[i].astype(np.float64) * sizes[i]
            sum_s[jj] += sizes[i]
            mem_b[jj] += members[i]
        new_tokens = [tokens[a_ids[k]] for k in kept]
        new_sizes = [sizes[a_ids[k]] for k in kept]
        new_members = [members[a_ids[k]] for k in kept]
        for jj in range(len(b_ids)):
            new_tokens.append((sum_x[jj] / sum_s[jj]).astype(np.float32))
            new_sizes.append(sum_s[jj])
            new_members.append(mem_b[jj])
        tokens, sizes, members = new_tokens, new_sizes, new_members
    assign = np.empty(len(x), np.int64)
    for out_idx, mem in enumerate(members):
        assign[mem] = out_idx
    return np.stack(tokens), np.asarray(sizes), assign


def _run(x: np.ndarray, heads: int, target: int):
    tok, size, assign = merge_clips(jnp.asarray(x), heads, target, return_assign=True)
    return np.asarray(tok), np.asarray(size), np.asarray(assign)


# ----------------------------------------------------------------------------- schedule


def test_schedule():
    assert merge_schedule(3136, 64) == (1568, 784, 392, 196, 98, 34)
    assert merge_schedule(6272, 128)[-1] == 68 and sum(merge_schedule(6272, 128)) == 6272 - 128
    assert merge_schedule(10, 9) == (1,)
    assert merge_schedule(64, 64) == ()
    with pytest.raises(ValueError):
        merge_schedule(10, 11)


# ----------------------------------------------------------------------------- vs plain loop


@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(4, 40),
    target_frac=st.floats(0.05, 0.95),
    heads=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**31 - 1),
    dup=st.booleans(),
)
def test_matches_plain_loop(n, target_frac, heads, seed, dup):
    rng = np.random.RandomState(seed)
    c = 8
    x = rng.randn(2, n, c).astype(np.float32)
    target = max(1, min(n - 1, int(round(n * target_frac))))
    if dup:
        # Exact duplicates within a (or within b) give exact score ties whatever the float
        # arithmetic. Copies across a/b (and any later round, where duplicates land on both
        # sides) give self-similarities equal to 1 only up to rounding, which two float
        # implementations may order differently — so duplicates are tested in one round.
        target = max(target, n - n // 2)
        src = rng.randint(0, n - 2, size=n // 3)
        dst = np.minimum(src + 2 * rng.randint(1, 4, size=src.shape), n - 1 - (n - 1 - src) % 2)
        x[:, dst] = x[:, src]
    tok, size, assign = _run(x, heads, target)
    for b in range(2):
        want_tok, want_size, want_assign = loop_tome(x[b], heads, target)
        np.testing.assert_array_equal(assign[b], want_assign)
        np.testing.assert_allclose(tok[b], want_tok, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(size[b], want_size)
        assert size[b].sum() == n


def test_exact_ties_stable_order():
    """Equal best scores: lower a index first; with r = 1 only the first a merges."""
    c = 4
    x = np.zeros((1, 8, c), np.float32)
    base = np.array([1.0, 0.5, -0.25, 2.0], np.float32)
    x[0, 0::2] = base  # all a tokens identical → identical node_max
    rng = np.random.RandomState(0)
    x[0, 1::2] = np.stack([base, -base, rng.randn(c), rng.randn(c)])  # b0 == every a
    for target in (7, 5):
        tok, size, assign = _run(x, 2, target)
        want_tok, want_size, want_assign = loop_tome(x[0], 2, target)
        np.testing.assert_array_equal(assign[0], want_assign)
        np.testing.assert_allclose(tok[0], want_tok, atol=1e-6)
        np.testing.assert_allclose(size[0], want_size)
    tok, size, assign = _run(x, 2, 7)  # one round, r = 1
    # a0 merges into b0 (first maximum); a1..a3 stay, in index order; then b0..b3.
    assert assign[0].tolist() == [3, 3, 0, 4, 1, 5, 2, 6]
    assert size[0].tolist() == [1, 1, 1, 2, 1, 1, 1]


def test_odd_token_counts():
    x = np.random.RandomState(3).randn(1, 15, 8).astype(np.float32)
    tok, size, assign = _run(x, 2, 4)
    want_tok, want_size, want_assign = loop_tome(x[0], 2, 4)
    np.testing.assert_array_equal(assign[0], want_assign)
    np.testing.assert_allclose(tok[0], want_tok, atol=1e-5)
    assert size.sum() == 15


# ----------------------------------------------------------------------------- vs torch (original algorithm)


@pytest.mark.parametrize("n,target,heads", [(200, 16, 4), (32, 5, 2), (784, 64, 4)])
def test_matches_torch_original(n, target, heads):
    x = np.random.RandomState(n).randn(3, n, 16).astype(np.float32)
    want_tok, want_size = torch_tome(torch.from_numpy(x), heads, target)
    tok, size, _ = _run(x, heads, target)
    np.testing.assert_allclose(tok, want_tok.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(size, want_size.numpy())


def test_torch_ties_small_is_stable():
    """≤ 16 a tokens: torch's descending argsort is stable, like ours, so exact ties agree."""
    x = np.random.RandomState(0).randn(1, 24, 8).astype(np.float32)
    x[0, 0:8:2] = x[0, 8:16:2]  # duplicated a tokens
    want_tok, want_size = torch_tome(torch.from_numpy(x), 2, 6)
    tok, size, _ = _run(x, 2, 6)
    np.testing.assert_allclose(tok, want_tok.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(size, want_size.numpy())


def test_duplicated_frames_values_match_torch():
    """Duplicated frames (exact ties among > 16 a tokens, where torch's order is not stable):
    the merged values and sizes agree with torch even though tie order may differ."""
    frame = np.random.RandomState(5).randn(64, 16).astype(np.float32)
    x = np.concatenate([frame, frame, frame, frame])[None]  # 4 identical "frames" of 64 tokens
    want_tok, want_size = torch_tome(torch.from_numpy(x), 4, 64)
    tok, size, _ = _run(x, 4, 64)
    # compare as multisets of (token, size) rows
    def rows(t, s):
        r = np.concatenate([t[0], s[0][:, None]], axis=1)
        return r[np.lexsort(r.T[::-1])]
    np.testing.assert_allclose(rows(tok, size), rows(want_tok.numpy(), want_size.numpy()), atol=1e-5)


def test_dtype_and_jit_composition():
    """bf16 features: merged in float32, returned in bf16; merge_clips composes under jit/vmap."""
    import jax

    x = np.random.RandomState(2).randn(2, 3, 40, 16).astype(np.float32)
    f = jax.jit(jax.vmap(lambda c: merge_clips(c, 4, 8)[0]))
    out = f(jnp.asarray(x))
    assert out.shape == (2, 3, 8, 16)
    np.testing.assert_allclose(np.asarray(out[1]), _run(x[1], 4, 8)[0], atol=1e-6)
    tok, size = merge_clips(jnp.asarray(x[0], jnp.bfloat16), 4, 8)
    assert tok.dtype == jnp.bfloat16 and size.dtype == jnp.float32


# ----------------------------------------------------------------------------- fixture


@pytest.mark.parametrize("frames", [4, 8])
def test_fixture_assign_and_tokens(ref, frames):
    if frames == 4:
        vit = ref["L4/vit_out"]
    else:
        vit = ref["L8/vit_out_clip0"][None]
    want_assign = ref[f"L{frames}/tome_assign"][: vit.shape[0]]
    want_tok = ref[f"L{frames}/tome_out"][: vit.shape[0]]
    tok, size, assign = _run(vit, 4, 16 * frames)
    np.testing.assert_array_equal(assign, want_assign.astype(np.int64))
    err = float(np.abs(tok - want_tok).max())
    assert err <= 1e-5, err
    assert (size.sum(-1) == vit.shape[1]).all()
