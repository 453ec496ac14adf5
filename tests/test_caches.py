"""The KV cache type against plain numpy / torch references: append, keep a subset, compact spans."""

import jax.numpy as jnp
import numpy as np
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
