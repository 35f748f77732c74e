"""Prefill (varlen flash attention on simdgroup matrices) entry points in the
emulator against reference.attention.paged_attention_prefill, on the edge cases
of tests/kernels/test_paged_attention_prefill.py at emulation-sized lengths."""

import itertools

import numpy as np
import pytest

from kernels.paged import TOLERANCE, make_paged, random_q
from metal_emu import attention_driver as drv
from reference import attention as ref

GQA = [(4, 4), (8, 2), (7, 1), (14, 1)]
HEAD_DIMS = [64, 128, 256]
BLOCK_SIZES = [8, 16, 32]
DTYPES = ["float32", "float16", "bfloat16"]
VARIANTS = [  # causal, sliding_window, softcap
    (True, None, None), (True, 9, None), (True, None, 25.0), (False, None, None),
    (False, 12, 30.0), (True, 300, None),
]


def check(emulator, heads, kv_heads, head_dim, block_size, dtype, seqs, causal=True, window=None,
          softcap=None, scale=None, seed=0, heads_used=None):
    """seqs: (context_len, num_queries) per sequence; queries are the last tokens."""
    rng = np.random.default_rng(seed)
    batch = make_paged(rng, [c for c, _ in seqs], kv_heads, head_dim, block_size, dtype)
    qsl = np.concatenate([[0], np.cumsum([n for _, n in seqs])]).astype(np.int32)
    q = random_q(rng, int(qsl[-1]), heads, head_dim, dtype)
    scale = head_dim ** -0.5 if scale is None else scale
    got = drv.prefill(emulator, batch, q, qsl, scale, causal, window, softcap, seed)
    want = ref.paged_attention_prefill(q, batch.k_cache, batch.v_cache, batch.block_tables, qsl,
                                       batch.context_lens, scale, causal, window, softcap)
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


CASES = [(d, dt, HEAD_DIMS.index(d) * 3 + DTYPES.index(dt)) for d, dt in itertools.product(HEAD_DIMS, DTYPES)]


@pytest.mark.parametrize("head_dim,dtype,i", CASES, ids=[f"d{d}-{dt}" for d, dt, _ in CASES])
def test_matches_reference(emulator, head_dim, dtype, i):
    """Every entry point; GQA ratio, block size and masking variant rotate over the cases."""
    bs = BLOCK_SIZES[i % len(BLOCK_SIZES)]
    causal, window, softcap = VARIANTS[i % len(VARIANTS)]
    seqs = [
        (1, 1),                    # context 1
        (bs, bs),                  # a whole first prompt on a block boundary
        (2 * bs + 3, 2 * bs + 3),  # off the boundary, more than one query tile
        (50, 7),                   # chunk after a cached prefix
        (5, 0),                    # a sequence with no query in this step
        (3 * bs + 1, 1),           # decode-like
    ]
    check(emulator, *GQA[i % len(GQA)], head_dim, bs, dtype, seqs, causal, window, softcap, seed=100 + i)


@pytest.mark.parametrize("gqa", GQA, ids=[f"h{h}kv{k}" for h, k in GQA])
def test_gqa_ratios(emulator, gqa):
    check(emulator, *gqa, 64, 16, "float32", [(20, 20), (9, 3)], seed=5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 1, 16, 500])
def test_windows_shorter_and_longer_than_context(emulator, causal, window):
    check(emulator, 2, 1, 64, 16, "float32", [(70, 70), (100, 30)], causal, window, seed=7)


def test_softcap_large_scale(emulator):
    check(emulator, 4, 2, 128, 8, "float32", [(40, 10)], softcap=5.0, scale=1.0, seed=8)


def test_non_contiguous_block_tables(emulator):
    rng = np.random.default_rng(9)
    batch = make_paged(rng, [33, 17], 1, 64, 8, "float16")
    batch.block_tables[1, :3] = batch.block_tables[0, [4, 0, 2]]  # shared (prefix-cache) blocks, out of order
    qsl = np.array([0, 33, 40], np.int32)
    q = random_q(rng, 40, 2, 64, "float16")
    got = drv.prefill(emulator, batch, q, qsl, 0.125)
    want = ref.paged_attention_prefill(q, batch.k_cache, batch.v_cache, batch.block_tables, qsl,
                                       batch.context_lens, 0.125)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_empty_batch_and_sequences_without_queries(emulator):
    rng = np.random.default_rng(0)
    batch = make_paged(rng, [3, 16], 2, 64, 16)
    out = drv.prefill(emulator, batch, np.zeros((0, 4, 64), np.float32), np.array([0, 0, 0], np.int32), 0.125)
    assert out.shape == (0, 4, 64)


def test_tiles_numbered_over_sequences(emulator):
    """Sequences with 1, 32, 33 and 64 queries (1-2 tiles each, sequences
    without queries in between): every tile finds its sequence."""
    check(emulator, 2, 1, 64, 8, "float32", [(40, 33), (5, 0), (5, 1), (70, 64), (33, 32), (9, 0), (1, 1)],
          seed=12)
