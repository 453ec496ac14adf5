"""`attend_cached` (new tokens over an unwritten cache + themselves) and the one-pass dense path
against a plain numpy softmax loop."""

from __future__ import annotations

import numpy as np

from lvjax.attention import attend, attend_cached


def _reference(q, k, v, allowed):
    """q (B,T,Hq,D), k/v (B,S,Hkv,D), allowed (B,T,S) → (B,T,Hq,D); rows with no key give 0."""
    b, t, hq, d = q.shape
    g = hq // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for h in range(hq):
            for i in range(t):
                keys = np.nonzero(allowed[bi, i])[0]
                if len(keys) == 0:
                    continue
                s = k[bi, keys, h // g] @ q[bi, i, h] / np.sqrt(d)
                p = np.exp(s - s.max())
                out[bi, i, h] = (p / p.sum()) @ v[bi, keys, h // g]
    return out


def test_attend_cached_matches_attention_over_the_written_cache():
    rng = np.random.RandomState(0)
    b, t, s, hq, hkv, d = 2, 3, 10, 4, 2, 8
    q = rng.randn(b, t, hq, d).astype(np.float32)
    k_new, v_new = (rng.randn(b, t, hkv, d).astype(np.float32) for _ in range(2))
    k_cache, v_cache = (rng.randn(b, hkv, s, d).astype(np.float32) for _ in range(2))
    cache_mask = rng.rand(b, 1, s) < 0.6
    cache_mask[1] = False  # row 1 has an empty cache: it sees only the new tokens
    new_mask = np.tril(np.ones((t, t), bool))[None] & np.array([True, False, True])[None, None]
    got = np.asarray(attend_cached(q, k_new, v_new, k_cache, v_cache, cache_mask, new_mask))
    keys = np.concatenate([k_cache.transpose(0, 2, 1, 3), k_new], axis=1)
    vals = np.concatenate([v_cache.transpose(0, 2, 1, 3), v_new], axis=1)
    allowed = np.concatenate([np.broadcast_to(cache_mask, (b, t, s)), np.broadcast_to(new_mask, (b, t, t))], axis=2)
    np.testing.assert_allclose(got, _reference(q, keys, vals, allowed), atol=1e-5)
    # and the dense path of `attend` over the same keys, with one fully masked row
    allowed[0, 0] = False
    np.testing.assert_allclose(np.asarray(attend(q, keys, vals, allowed)), _reference(q, keys, vals, allowed),
                               atol=1e-5)
