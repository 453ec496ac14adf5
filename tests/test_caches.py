"""The KV cache type against plain numpy / torch references: append, keep a subset, compact spans."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lvjax.caches import KVCache


def _cache(rng, s=10, capacity=16):
    k = rng.normal(size=(2, 1, s, 2, 4)).astype(np.float32)
    v = rng.normal(size=(2, 1, s, 2, 4)).astype(np.float32)
    return k, v, KVCache.prefilled(jnp.asarray(k), jnp.asarray(v), capacity)


def test_append_writes_at_the_fill_length():
    rng = np.random.default_rng(0)
    k, v, cache = _cache(rng)
    new_k, new_v = rng.normal(size=(2, 2, 1, 3, 2, 4)).astype(np.float32)
    out = cache.append(jnp.asarray(new_k), jnp.asarray(new_v))
    assert int(out.length) == 13 and out.capacity == 16
    np.testing.assert_array_equal(np.asarray(out.k)[:, :, :13], np.concatenate([k, new_k], axis=2))
    np.testing.assert_array_equal(np.asarray(out.v)[:, :, 10:13], new_v)


def test_append_counting_n_rows_then_grown():
    """A step keeps n of its T rows (Video-XL's windows): length advances by n and the next append
    overwrites the scratch rows; grown pads empty slots and keeps what is filled."""
    rng = np.random.default_rng(3)
    k, v, cache = _cache(rng)
    a_k, a_v, b_k, b_v = rng.normal(size=(4, 2, 1, 4, 2, 4)).astype(np.float32)
    out = cache.append(jnp.asarray(a_k), jnp.asarray(a_v), n=jnp.int32(1))
    out = out.append(jnp.asarray(b_k[:, :, :2]), jnp.asarray(b_v[:, :, :2]), n=2).grown(24)
    assert int(out.length) == 13 and out.capacity == 24
    np.testing.assert_array_equal(np.asarray(out.k)[:, :, :13], np.concatenate([k, a_k[:, :, :1], b_k[:, :, :2]], 2))
    np.testing.assert_array_equal(np.asarray(out.v)[:, :, 11:13], b_v[:, :, :2])
    np.testing.assert_array_equal(np.asarray(out.v)[:, :, 13], a_v[:, :, 3])  # scratch of the first step
    assert not np.asarray(out.k)[:, :, 16:].any()


def test_keep_subset_in_order():
    rng = np.random.default_rng(1)
    k, v, cache = _cache(rng)
    idx = np.array([0, 3, 4, 9])
    out = cache.keep(jnp.asarray(idx, jnp.int32), 8)
    assert int(out.length) == 4 and out.capacity == 8
    np.testing.assert_array_equal(np.asarray(out.k)[:, :, :4], k[:, :, idx])
    np.testing.assert_array_equal(np.asarray(out.v)[:, :, :4], v[:, :, idx])


def test_compact_pools_spans_as_torch_avg_pool1d():
    rng = np.random.default_rng(2)
    k, v, cache = _cache(rng, s=14)
    out = cache.compact([(0, 3, 1), (3, 12, 4), (12, 14, 1)], 12)  # 3 + 9//4 + 2 rows
    assert int(out.length) == 7
    span = torch.from_numpy(k[:, :, 3:12]).permute(0, 1, 3, 4, 2).reshape(-1, 1, 9)
    pooled = torch.nn.functional.avg_pool1d(span, 4).reshape(2, 1, 2, 4, 2).permute(0, 1, 4, 2, 3).numpy()
    want = np.concatenate([k[:, :, :3], pooled, k[:, :, 12:14]], axis=2)
    np.testing.assert_allclose(np.asarray(out.k)[:, :, :7], want, rtol=1e-6)


def test_per_layer_masked_cache():
    """The per-layer form (tuples of (B, Hkv, S, D), heads before slots) with a padding mask (LP-Comp stages)."""
    rng = np.random.default_rng(3)
    k = tuple(rng.normal(size=(2, 2, 5, 4)).astype(np.float32) for _ in range(3))
    v = tuple(rng.normal(size=(2, 2, 5, 4)).astype(np.float32) for _ in range(3))
    valid = np.array([[True] * 5, [False, False, True, True, True]])
    cache = KVCache.prefilled(tuple(map(jnp.asarray, k)), tuple(map(jnp.asarray, v)), 8, jnp.asarray(valid))
    assert cache.capacity == 8 and int(cache.length) == 5
    np.testing.assert_array_equal(np.asarray(cache.valid)[:, 5:], False)
    new = tuple(rng.normal(size=(2, 2, 2, 4)).astype(np.float32) for _ in range(3))
    new_valid = np.array([[True, True], [False, True]])
    out = cache.append(tuple(map(jnp.asarray, new)), tuple(map(jnp.asarray, new)), jnp.asarray(new_valid))
    assert int(out.length) == 7
    np.testing.assert_array_equal(np.asarray(out.valid), np.concatenate([valid, new_valid, [[False], [False]]], 1))
    for layer in range(3):
        np.testing.assert_array_equal(np.asarray(out.k[layer])[:, :, :7], np.concatenate([k[layer], new[layer]], 2))
    kept = out.keep(jnp.asarray([1, 3, 6], jnp.int32), 4)
    np.testing.assert_array_equal(np.asarray(kept.valid), [[True, True, True, False], [False, True, True, False]])
    np.testing.assert_array_equal(np.asarray(kept.v[2])[:, :, :2], v[2][:, :, [1, 3]])
    with pytest.raises(ValueError, match="padding"):
        out.compact([(0, 4, 2)], 4)
