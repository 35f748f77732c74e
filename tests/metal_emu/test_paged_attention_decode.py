"""Decode attention entry points (plain and split-K + reduce) in the emulator
against reference.attention.paged_attention_decode, on the edge cases of
tests/kernels/test_paged_attention_decode.py at emulation-sized lengths."""

import itertools

import numpy as np
import pytest

from kernels.paged import TOLERANCE, make_paged, random_q
from metal_emu import attention_driver as drv
from reference import attention as ref

GQA = [(4, 4), (8, 2), (7, 1), (14, 1)]  # ratios 1, 4, 7, 14 (14 > 8 heads: two chunks)
HEAD_DIMS = [64, 128, 256]
BLOCK_SIZES = [8, 16, 32]
DTYPES = ["float32", "float16", "bfloat16"]
VARIANTS = [(None, None), (5, None), (None, 20.0), (70, 30.0)]  # sliding window, softcap


def check(emulator, heads, kv_heads, head_dim, block_size, dtype, lens, window=None, softcap=None,
          partition_size=0, scale=None, seed=0):
    rng = np.random.default_rng(seed)
    batch = make_paged(rng, lens, kv_heads, head_dim, block_size, dtype)
    q = random_q(rng, len(lens), heads, head_dim, dtype)
    scale = head_dim ** -0.5 if scale is None else scale
    got = drv.decode(emulator, batch, q, scale, window, softcap, partition_size, seed)
    want = ref.paged_attention_decode(q, batch.k_cache, batch.v_cache, batch.block_tables,
                                      batch.context_lens, scale, window, softcap)
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


# Every (head_dim, dtype) entry point, both variants, over GQA ratios, block
# sizes, windows and softcaps; lengths: context 1, on and off block boundaries.
CASES = [(d, dt, HEAD_DIMS.index(d) * 3 + DTYPES.index(dt)) for d, dt in itertools.product(HEAD_DIMS, DTYPES)]


@pytest.mark.parametrize("split", [False, True], ids=["plain", "split"])
@pytest.mark.parametrize("head_dim,dtype,i", CASES, ids=[f"d{d}-{dt}" for d, dt, _ in CASES])
def test_matches_reference(emulator, head_dim, dtype, i, split):
    heads, kvh = GQA[i % len(GQA)]
    bs = BLOCK_SIZES[i % len(BLOCK_SIZES)]
    window, softcap = VARIANTS[(i + split) % len(VARIANTS)]
    lens = [1, bs, 2 * bs + 1, 3 * bs - 1, 530 if split else 300]
    check(emulator, heads, kvh, head_dim, bs, dtype, lens, window, softcap,
          partition_size=64 if split else 0, seed=i)


@pytest.mark.parametrize("gqa", GQA, ids=[f"h{h}kv{k}" for h, k in GQA])
def test_gqa_ratios(emulator, gqa):
    check(emulator, *gqa, 64, 16, "float32", [1, 17, 33], seed=7)


@pytest.mark.parametrize("window", [1, 7, 16, 100])
@pytest.mark.parametrize("split", [False, True], ids=["plain", "split"])
def test_sliding_window_shorter_and_longer_than_context(emulator, window, split):
    # With split-K, windows leave whole partitions without visible keys.
    check(emulator, 8, 2, 64, 16, "float16", [1, 15, 16, 17, 90], window=window,
          partition_size=32 if split else 0, seed=window)


@pytest.mark.parametrize("softcap", [1.0, 50.0])
def test_softcap(emulator, softcap):
    check(emulator, 4, 1, 128, 16, "float32", [3, 70], softcap=softcap, scale=1.0)


def test_split_k_partition_count(emulator):
    """Many partitions (block_size 8, partitions of 32 keys): 160 keys -> 5+."""
    check(emulator, 4, 1, 64, 8, "float32", [160, 33, 32, 1], partition_size=32, seed=3)


def test_non_contiguous_block_tables(emulator):
    """make_paged scatters blocks over a shuffled pool; here a table also reuses
    a sequence's blocks in reverse order."""
    rng = np.random.default_rng(11)
    batch = make_paged(rng, [40, 20], 2, 64, 8, "float32")
    batch.block_tables[1, :3] = batch.block_tables[0, :5][::-1][:3]
    q = random_q(rng, 2, 4, 64, "float32")
    got = drv.decode(emulator, batch, q, 0.125)
    want = ref.paged_attention_decode(q, batch.k_cache, batch.v_cache, batch.block_tables,
                                      batch.context_lens, 0.125)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_empty_batch(emulator):
    rng = np.random.default_rng(0)
    batch = make_paged(rng, [], 2, 64, 16)
    batch.block_tables = np.zeros((0, 3), np.int32)
    out = drv.decode(emulator, batch, np.zeros((0, 4, 64), np.float32), 0.125)
    assert out.shape == (0, 4, 64)
