"""KV pools: zero-filled, written in place by write_kv, and resident only where written."""

import mlx.core as mx
import numpy as np
import pytest

from tinyfast.engine.memory import zeroed_pool
from tinyfast.ops import write_kv


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.float32])
def test_pool_is_zero_and_write_kv_updates_it_in_place(dtype):
    shape = (8, 16, 2, 64)
    k_pool, v_pool = zeroed_pool(shape, dtype), zeroed_pool(shape, dtype)
    assert k_pool.shape == shape and k_pool.dtype == dtype
    assert not np.any(np.array(k_pool.astype(mx.float32)))
    rng = np.random.default_rng(0)
    k = mx.array(rng.standard_normal((3, 2, 64)).astype(np.float32)).astype(dtype)
    v = mx.array(rng.standard_normal((3, 2, 64)).astype(np.float32)).astype(dtype)
    slots = mx.array(np.array([5, 17, 127], np.int32))
    k_out, v_out = write_kv(k, v, k_pool, v_pool, slots)
    mx.eval(k_out, v_out)
    expect = np.zeros((8 * 16, 2, 64), np.float32)
    expect[[5, 17, 127]] = np.array(k.astype(mx.float32))
    got = np.array(k_out.astype(mx.float32)).reshape(-1, 2, 64)
    assert np.array_equal(got, expect)
    # In place: the pool array itself sees the write (the engine relies on this).
    assert np.array_equal(np.array(k_pool.astype(mx.float32)).reshape(-1, 2, 64), expect)


@pytest.mark.skipif(mx.metal.is_available(), reason="with Metal the pool is an ordinary mx.zeros")
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_untouched_pool_pages_are_not_resident():
    before = _rss_bytes()
    pool = zeroed_pool((4096, 16, 4, 256), mx.float16)  # 128 MiB
    mx.eval(pool)
    assert _rss_bytes() - before < 16 * 2**20
    del pool
