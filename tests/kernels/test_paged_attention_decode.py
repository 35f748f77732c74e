"""paged_attention_decode against the NumPy reference, plus batch invariance,
split-K, layouts, mx.compile and bad input."""

import itertools
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

import tinyfast
from kernels.paged import DTYPES, TOLERANCE, make_paged, random_q, same_bits, to_numpy
from reference import attention as ref
from tinyfast.ops import paged_attention_decode, paged_attention_prefill

GQA = [(4, 4), (8, 2), (7, 1), (14, 1)]  # ratios 1, 4, 7, 14
HEAD_DIMS = [64, 128, 256]
BLOCK_SIZES = [8, 16, 32]
# Per-case sequence lengths: context 1, on and off block boundaries, and one
# long enough for split-K (partitions of 512 keys).
VARIANTS = [(None, None), (5, None), (None, 20.0), (700, 30.0)]


def run_decode(rng, heads, kv_heads, head_dim, block_size, dtype, context_lens, window=None,
               softcap=None, scale=None):
    batch = make_paged(rng, context_lens, kv_heads, head_dim, block_size, dtype)
    q = random_q(rng, len(context_lens), heads, head_dim, dtype)
    scale = head_dim ** -0.5 if scale is None else scale
    kc, vc = batch.mx_caches()
    out = paged_attention_decode(mx.array(q).astype(DTYPES[dtype]), kc, vc, batch.block_tables,
                                 batch.context_lens, scale, sliding_window=window, softcap=softcap)
    assert out.dtype == DTYPES[dtype] and out.shape == q.shape
    want = ref.paged_attention_decode(q, batch.k_cache, batch.v_cache, batch.block_tables,
                                      batch.context_lens, scale, window, softcap)
    return to_numpy(out), want


CASES = list(itertools.product(HEAD_DIMS, GQA, BLOCK_SIZES))


@pytest.mark.parametrize("head_dim,gqa,block_size", CASES,
                         ids=[f"d{d}-h{h}kv{k}-bs{b}" for d, (h, k), b in CASES])
def test_matches_reference(head_dim, gqa, block_size):
    i = CASES.index((head_dim, gqa, block_size))
    rng = np.random.default_rng(i)
    dtype = list(DTYPES)[i % 3]
    window, softcap = VARIANTS[i % len(VARIANTS)]
    bs = block_size
    lens = [1, bs, 2 * bs + 1, 3 * bs - 1, 1100 if i % 2 else 530]
    out, want = run_decode(rng, *gqa, head_dim, bs, dtype, lens, window, softcap)
    np.testing.assert_allclose(out, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("window", [1, 7, 16, 100, 600, 5000])
def test_sliding_window_shorter_and_longer_than_context(dtype, window):
    rng = np.random.default_rng(window)
    out, want = run_decode(rng, 8, 2, 64, 16, dtype, [1, 15, 16, 17, 300, 1500], window=window)
    np.testing.assert_allclose(out, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("softcap", [1.0, 5.0, 50.0])
def test_softcap(softcap):
    rng = np.random.default_rng(0)
    # A large scale makes the cap matter.
    out, want = run_decode(rng, 4, 1, 128, 16, "float32", [3, 200, 900], softcap=softcap, scale=1.0)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)


def test_long_context_split_k():
    rng = np.random.default_rng(1)
    out, want = run_decode(rng, 4, 1, 256, 16, "float32", [4097, 513, 512])
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)


def test_empty_batch():
    kc = mx.zeros((4, 16, 2, 64))
    out = paged_attention_decode(mx.zeros((0, 4, 64)), kc, kc, np.zeros((0, 3), np.int32),
                                 np.zeros((0,), np.int32), 0.125)
    assert out.shape == (0, 4, 64)
    mx.eval(out)


@pytest.mark.cpu_only("the Metal kernels take head_dim 64/128/256")
def test_head_dim_not_multiple_of_8():
    rng = np.random.default_rng(2)
    out, want = run_decode(rng, 4, 2, 20, 8, "float16", [1, 9, 70, 600])
    np.testing.assert_allclose(out, want, rtol=2e-3, atol=2e-3)


def _decode_seq_alone_and_batched(dtype):
    rng = np.random.default_rng(3)
    lens = [1, 17, 513, 2000, 64, 1025]
    batch = make_paged(rng, lens, 2, 128, 16, dtype)
    q = mx.array(random_q(rng, len(lens), 8, 128, dtype)).astype(DTYPES[dtype])
    kc, vc = batch.mx_caches()
    full = paged_attention_decode(q, kc, vc, batch.block_tables, batch.context_lens, 0.1,
                                  sliding_window=1500, softcap=30.0)
    alone = [paged_attention_decode(q[i:i + 1], kc, vc, batch.block_tables[i:i + 1],
                                    batch.context_lens[i:i + 1], 0.1, sliding_window=1500,
                                    softcap=30.0) for i in range(len(lens))]
    # A different batch: reversed order, a sequence repeated.
    order = [5, 3, 3, 0, 2]
    other = paged_attention_decode(q[mx.array(order)], kc, vc, batch.block_tables[order],
                                   batch.context_lens[order], 0.1, sliding_window=1500, softcap=30.0)
    return full, alone, other, order


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_invariant_bitwise(dtype):
    full, alone, other, order = _decode_seq_alone_and_batched(dtype)
    for i, a in enumerate(alone):
        assert same_bits(full[i:i + 1], a), f"sequence {i} differs alone vs in the batch"
    for row, i in enumerate(order):
        assert same_bits(other[row:row + 1], alone[i])


@pytest.mark.cpu_only("CPU thread pool / instruction-set builds")
def test_thread_count_does_not_change_bits():
    n = tinyfast.num_threads()
    try:
        tinyfast.set_num_threads(1)
        one, *_ = _decode_seq_alone_and_batched("float16")
        mx.eval(one)
        tinyfast.set_num_threads(3)
        three, *_ = _decode_seq_alone_and_batched("float16")
        mx.eval(three)
    finally:
        tinyfast.set_num_threads(n)
    assert same_bits(one, three)


def test_deterministic_across_runs():
    a, *_ = _decode_seq_alone_and_batched("float32")
    b, *_ = _decode_seq_alone_and_batched("float32")
    assert same_bits(a, b)


@pytest.mark.cpu_only("on the GPU decode and prefill are different kernels")
def test_decode_equals_prefill_with_one_query_per_sequence():
    rng = np.random.default_rng(4)
    lens = [1, 40, 600]
    batch = make_paged(rng, lens, 1, 64, 16, "float32")
    q = mx.array(random_q(rng, 3, 4, 64, "float32"))
    kc, vc = batch.mx_caches()
    dec = paged_attention_decode(q, kc, vc, batch.block_tables, batch.context_lens, 0.125)
    pre = paged_attention_prefill(q, kc, vc, batch.block_tables, np.arange(4, dtype=np.int32),
                                  batch.context_lens, 0.125)
    assert same_bits(dec, pre)


def test_strided_pool_and_transposed_query():
    """A head-major pool seen as [blocks, block_size, kv_heads, dim] via transpose, and a
    query produced by a transpose, give the same result as contiguous inputs."""
    rng = np.random.default_rng(5)
    batch = make_paged(rng, [30, 77], 2, 64, 8)
    kc, vc = batch.mx_caches()
    k_hm = mx.contiguous(kc.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # strided view
    v_hm = mx.contiguous(vc.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    q_t = mx.contiguous(mx.array(random_q(rng, 2, 4, 64, "float32")).transpose(1, 0, 2)).transpose(1, 0, 2)
    a = paged_attention_decode(q_t, k_hm, v_hm, batch.block_tables, batch.context_lens, 0.125)
    b = paged_attention_decode(mx.contiguous(q_t), kc, vc, batch.block_tables, batch.context_lens, 0.125)
    assert same_bits(a, b)


def test_inside_mx_compile():
    rng = np.random.default_rng(6)
    batch = make_paged(rng, [5, 300], 2, 64, 16)
    kc, vc = batch.mx_caches()
    q = mx.array(random_q(rng, 2, 4, 64, "float32"))
    bt, cl = mx.array(batch.block_tables), mx.array(batch.context_lens)

    @mx.compile
    def step(q, kc, vc, bt, cl):
        return paged_attention_decode(q * 1.0, kc, vc, bt, cl, 0.125, sliding_window=100) + 1.0

    eager = paged_attention_decode(q, kc, vc, bt, cl, 0.125, sliding_window=100) + 1.0
    assert same_bits(step(q, kc, vc, bt, cl), eager)
    # A second call with other values reuses the trace.
    assert same_bits(step(q * 2, kc, vc, bt, cl),
                     paged_attention_decode(q * 2, kc, vc, bt, cl, 0.125, sliding_window=100) + 1.0)


@pytest.mark.cpu_only("CPU thread pool / instruction-set builds")
def test_baseline_kernels_without_avx2():
    """The baseline (non-AVX2) build of the kernels, forced through TINYFAST_CPU_DISABLE."""
    code = (
        "import numpy as np, mlx.core as mx, tinyfast\n"
        "assert tinyfast.cpu_features()['kernel_level'] in ('scalar', 'neon')\n"
        "from kernels.paged import make_paged, random_q, to_numpy\n"
        "from reference import attention as ref\n"
        "from tinyfast.ops import paged_attention_decode, paged_attention_prefill\n"
        "rng = np.random.default_rng(0)\n"
        "for dt in ('float32', 'float16', 'bfloat16'):\n"
        "    b = make_paged(rng, [1, 33, 700], 2, 72, 16, dt)\n"
        "    q = random_q(rng, 3, 8, 72, dt)\n"
        "    kc, vc = b.mx_caches()\n"
        "    out = paged_attention_decode(mx.array(q).astype(kc.dtype), kc, vc, b.block_tables, b.context_lens, 0.1, 300, 20.0)\n"
        "    want = ref.paged_attention_decode(q, b.k_cache, b.v_cache, b.block_tables, b.context_lens, 0.1, 300, 20.0)\n"
        "    tol = {'float32': 2e-5, 'float16': 2e-3, 'bfloat16': 1.6e-2}[dt]\n"
        "    np.testing.assert_allclose(to_numpy(out), want, rtol=tol, atol=tol)\n"
        "    qp = random_q(rng, 40, 8, 72, dt)\n"
        "    qsl = np.array([0, 1, 20, 40], np.int32)\n"
        "    out = paged_attention_prefill(mx.array(qp).astype(kc.dtype), kc, vc, b.block_tables, qsl, b.context_lens, 0.1)\n"
        "    want = ref.paged_attention_prefill(qp, b.k_cache, b.v_cache, b.block_tables, qsl, b.context_lens, 0.1)\n"
        "    np.testing.assert_allclose(to_numpy(out), want, rtol=tol, atol=tol)\n"
    )
    tests_dir = os.path.dirname(os.path.dirname(__file__))
    env = dict(os.environ, TINYFAST_CPU_DISABLE="avx512f,avx2,neon", PYTHONPATH=tests_dir)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- bad input --------------------------------------------------------------------


def _valid(num_seqs=2, heads=4, kv_heads=2, dim=64, dtype=mx.float32):
    kc = mx.zeros((6, 16, kv_heads, dim), dtype=dtype)
    q = mx.zeros((num_seqs, heads, dim), dtype=dtype)
    bt = np.array([[0, 1, -1], [2, -1, -1]][:num_seqs], np.int32)
    cl = np.array([20, 5][:num_seqs], np.int32)
    return dict(q=q, k_cache=kc, v_cache=kc, block_tables=bt, context_lens=cl, scale=0.1)


@pytest.mark.parametrize("change,error,match", [
    (dict(q=mx.zeros((2, 4, 64), dtype=mx.float16)), TypeError, "k_cache must be float16"),
    (dict(q=mx.zeros((2, 4, 64), dtype=mx.int32)), TypeError, "q must be float32, float16 or bfloat16"),
    (dict(block_tables=mx.zeros((2, 3))), TypeError, "block_tables must be int32"),
    (dict(context_lens=mx.array([20, 5], dtype=mx.int64)), TypeError, "context_lens must be int32"),
    (dict(context_lens=np.array([2.0, 1.0])), TypeError, "context_lens must hold integers"),
    (dict(q=mx.zeros((2, 4, 32))), ValueError, "head_dim"),
    (dict(q=mx.zeros((2, 3, 64))), ValueError, "not a multiple of num_kv_heads"),
    (dict(q=mx.zeros((3, 4, 64))), ValueError, "one query per sequence"),
    (dict(q=mx.zeros((2, 4))), ValueError, "q must be 3-D"),
    (dict(block_tables=np.array([[0, 1, -1]], np.int32)), ValueError, "block_tables has 1 rows"),
    (dict(block_tables=np.array([[0, 6, -1], [2, -1, -1]], np.int32)), ValueError,
     r"block_tables\[0, 1\] = 6 is not a block"),
    (dict(block_tables=np.array([[0, -1, -1], [2, -1, -1]], np.int32)), ValueError,
     r"block_tables\[0, 1\] = -1"),
    (dict(context_lens=np.array([49, 5], np.int32)), ValueError, "exceeds the block table capacity"),
    (dict(context_lens=np.array([20, 0], np.int32)), ValueError, "must be at least 1"),
    (dict(scale=float("nan")), ValueError, "scale must be finite"),
    (dict(sliding_window=0), ValueError, "sliding_window must be >= 1"),
    (dict(softcap=-1.0), ValueError, "softcap must be a positive"),
    (dict(q=np.zeros((2, 4, 64), np.float32)), TypeError, "q must be an mlx.core.array"),
])
def test_bad_input_raises(change, error, match):
    args = _valid()
    args.update(change)
    with pytest.raises(error, match=match):
        paged_attention_decode(**args)


def test_valid_input_for_error_cases_runs():
    mx.eval(paged_attention_decode(**_valid()))


@pytest.mark.cpu_only("the GPU cannot check device-side metadata before the kernels run")
def test_lazy_metadata_is_checked_at_evaluation():
    args = _valid()
    args["block_tables"] = mx.array(args["block_tables"]) + 5  # lazy: 5..7, and 4 for padding
    out = paged_attention_decode(**args)
    with pytest.raises(RuntimeError, match="is not a block of the cache"):
        mx.eval(out)


def test_shapeless_compile_across_batch_sizes():
    """One shapeless trace serves every batch size (output_shapes is implemented)."""
    rng = np.random.default_rng(10)
    step = mx.compile(lambda q, kc, vc, bt, cl: paged_attention_decode(q, kc, vc, bt, cl, 0.1), shapeless=True)
    for num_seqs in (2, 5, 1):
        batch = make_paged(rng, list(rng.integers(1, 300, num_seqs)), 2, 64, 16)
        kc, vc = batch.mx_caches()
        q = mx.array(random_q(rng, num_seqs, 8, 64, "float32"))
        bt, cl = mx.array(batch.block_tables), mx.array(batch.context_lens)
        assert same_bits(step(q, kc, vc, bt, cl), paged_attention_decode(q, kc, vc, bt, cl, 0.1))


def test_strided_metadata_arrays():
    """block_tables / context_lens given as strided views are read correctly."""
    rng = np.random.default_rng(11)
    batch = make_paged(rng, [9, 40, 3], 2, 64, 8)
    kc, vc = batch.mx_caches()
    q = mx.array(random_q(rng, 3, 4, 64, "float32"))
    bt_view = mx.array(np.ascontiguousarray(batch.block_tables.T)).T  # transposed view
    cl_view = mx.array(np.repeat(batch.context_lens, 2))[::2]  # stride-2 view
    a = paged_attention_decode(q, kc, vc, bt_view, cl_view, 0.125)
    b = paged_attention_decode(q, kc, vc, batch.block_tables, batch.context_lens, 0.125)
    assert same_bits(a, b)
