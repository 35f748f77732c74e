"""write_kv entry points in the emulator against reference.attention.write_kv."""

import numpy as np
import pytest

from metal_emu import params
from metal_emu.storage import from_storage, to_storage
from reference import attention as ref

DTYPES = ["float32", "float16", "bfloat16"]


def run_write_kv(emulator, dtype, k, v, k_cache, v_cache, slots, seed=0):
    kc, vc = to_storage(k_cache, dtype), to_storage(v_cache, dtype)
    num_tokens, kvh, d = k.shape
    p = params.WriteKVParams(num_tokens, kvh * d, k_cache.shape[0] * k_cache.shape[1])
    grid = (-(-(kvh * d) // params.WRITE_KV_THREADS), max(num_tokens, 1))
    if num_tokens:  # an empty dispatch is skipped by the host, as on the GPU
        emulator.launch(f"tf_write_kv_{dtype}", [to_storage(k, dtype), to_storage(v, dtype), kc, vc,
                                                  np.ascontiguousarray(slots, np.int32), p],
                        grid, (params.WRITE_KV_THREADS,), seed=seed)
    return from_storage(kc, dtype), from_storage(vc, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("num_tokens", [0, 1, 5, 40])
def test_matches_reference(emulator, dtype, block_size, num_tokens):
    rng = np.random.default_rng(block_size * 100 + num_tokens)
    num_blocks, kvh, d = 6, 2, 64
    shape = (num_blocks, block_size, kvh, d)
    k_cache = from_storage(to_storage(rng.standard_normal(shape), dtype), dtype)
    v_cache = from_storage(to_storage(rng.standard_normal(shape), dtype), dtype)
    slots = rng.permutation(num_blocks * block_size)[:num_tokens].astype(np.int32)
    slots[::4] = -1  # padding tokens are skipped
    k = from_storage(to_storage(rng.standard_normal((num_tokens, kvh, d)), dtype), dtype)
    v = from_storage(to_storage(rng.standard_normal((num_tokens, kvh, d)), dtype), dtype)
    got_k, got_v = run_write_kv(emulator, dtype, k, v, k_cache, v_cache, slots, seed=num_tokens)
    want_k, want_v = ref.write_kv(k, v, k_cache, v_cache, slots)
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(got_v, want_v)


def test_row_wider_than_a_threadgroup(emulator):
    """kv_heads * head_dim = 7 * 128 spans four threadgroups, the last one partial."""
    rng = np.random.default_rng(0)
    shape = (3, 8, 7, 128)
    k_cache = np.zeros(shape, np.float32)
    k = rng.standard_normal((5, 7, 128)).astype(np.float32)
    slots = np.array([23, 0, -1, 9, 8], np.int32)
    got_k, got_v = run_write_kv(emulator, "float32", k, -k, k_cache, k_cache, slots)
    want_k, want_v = ref.write_kv(k, -k, k_cache, k_cache, slots)
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(got_v, want_v)
