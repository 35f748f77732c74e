"""paged_attention_prefill (varlen, chunked prefill, prefix-cache hits) against the
NumPy reference, plus batch invariance, mx.compile and bad input."""

import itertools

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels.paged import DTYPES, TOLERANCE, make_paged, random_q, same_bits, to_numpy
from reference import attention as ref
from tinyfast.ops import paged_attention_prefill

GQA = [(4, 4), (8, 2), (7, 1), (14, 1)]
HEAD_DIMS = [64, 128, 256]
BLOCK_SIZES = [8, 16, 32]
VARIANTS = [  # causal, sliding_window, softcap
    (True, None, None), (True, 9, None), (True, None, 25.0), (False, None, None),
    (False, 12, 30.0), (True, 300, None),
]


def run_prefill(rng, heads, kv_heads, head_dim, block_size, dtype, seqs, causal=True, window=None,
                softcap=None, scale=None):
    """seqs: (context_len, num_queries) per sequence; queries are the last tokens."""
    context_lens = [c for c, _ in seqs]
    batch = make_paged(rng, context_lens, kv_heads, head_dim, block_size, dtype)
    qsl = np.concatenate([[0], np.cumsum([n for _, n in seqs])]).astype(np.int32)
    q = random_q(rng, int(qsl[-1]), heads, head_dim, dtype)
    scale = head_dim ** -0.5 if scale is None else scale
    kc, vc = batch.mx_caches()
    out = paged_attention_prefill(mx.array(q).astype(DTYPES[dtype]), kc, vc, batch.block_tables, qsl,
                                  batch.context_lens, scale, causal=causal, sliding_window=window,
                                  softcap=softcap)
    assert out.dtype == DTYPES[dtype] and out.shape == q.shape
    want = ref.paged_attention_prefill(q, batch.k_cache, batch.v_cache, batch.block_tables, qsl,
                                       batch.context_lens, scale, causal, window, softcap)
    return to_numpy(out), want


CASES = list(itertools.product(HEAD_DIMS, GQA, BLOCK_SIZES))


@pytest.mark.parametrize("head_dim,gqa,block_size", CASES,
                         ids=[f"d{d}-h{h}kv{k}-bs{b}" for d, (h, k), b in CASES])
def test_matches_reference(head_dim, gqa, block_size):
    i = CASES.index((head_dim, gqa, block_size))
    rng = np.random.default_rng(100 + i)
    dtype = list(DTYPES)[i % 3]
    causal, window, softcap = VARIANTS[i % len(VARIANTS)]
    bs = block_size
    seqs = [
        (1, 1),              # context 1
        (bs, bs),            # a whole first prompt on a block boundary
        (2 * bs + 3, 2 * bs + 3),  # off the boundary
        (90, 7),             # chunk after a cached prefix (split-K path: few queries)
        (5, 0),              # a sequence with no query in this step
        (3 * bs + 1, 1),     # decode-like
        (620 if i % 2 else 200, 40),  # long prefix + chunk larger than the split threshold
    ]
    out, want = run_prefill(rng, *gqa, head_dim, bs, dtype, seqs, causal, window, softcap)
    np.testing.assert_allclose(out, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 1, 64, 5000])
def test_long_prompt(causal, window):
    rng = np.random.default_rng(7)
    out, want = run_prefill(rng, 4, 1, 64, 16, "float32", [(700, 700), (1100, 300)], causal, window)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)


def test_empty_batch():
    kc = mx.zeros((4, 16, 2, 64))
    out = paged_attention_prefill(mx.zeros((0, 4, 64)), kc, kc, np.zeros((0, 2), np.int32), [0],
                                  np.zeros((0,), np.int32), 0.125)
    assert out.shape == (0, 4, 64)
    mx.eval(out)


def test_sequences_without_queries():
    kc = mx.zeros((4, 16, 2, 64))
    out = paged_attention_prefill(mx.zeros((0, 4, 64)), kc, kc, np.array([[0], [1]], np.int32),
                                  [0, 0, 0], np.array([3, 16], np.int32), 0.125)
    assert out.shape == (0, 4, 64)
    mx.eval(out)


@pytest.mark.cpu_only("head_dim 32: the Metal kernels take 64/128/256")
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_batches(data):
    num_seqs = data.draw(st.integers(1, 4))
    seqs = []
    for _ in range(num_seqs):
        ctx = data.draw(st.integers(1, 200))
        seqs.append((ctx, data.draw(st.integers(0, ctx))))
    kv_heads = data.draw(st.sampled_from([1, 2]))
    group = data.draw(st.sampled_from([1, 3, 4]))
    block_size = data.draw(st.sampled_from([1, 8, 16, 32]))
    causal = data.draw(st.booleans())
    window = data.draw(st.sampled_from([None, 1, 5, 64]))
    softcap = data.draw(st.sampled_from([None, 10.0]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    out, want = run_prefill(rng, kv_heads * group, kv_heads, 32, block_size, "float32", seqs, causal,
                            window, softcap)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batch_invariant_bitwise(dtype):
    rng = np.random.default_rng(8)
    seqs = [(40, 40), (600, 12), (300, 100), (1, 1), (77, 3)]
    batch = make_paged(rng, [c for c, _ in seqs], 2, 64, 16, dtype)
    ns = [n for _, n in seqs]
    qsl = np.concatenate([[0], np.cumsum(ns)]).astype(np.int32)
    q = mx.array(random_q(rng, int(qsl[-1]), 8, 64, dtype)).astype(DTYPES[dtype])
    kc, vc = batch.mx_caches()
    kw = dict(scale=0.125, sliding_window=200, softcap=40.0)
    full = paged_attention_prefill(q, kc, vc, batch.block_tables, qsl, batch.context_lens, **kw)
    for i, n in enumerate(ns):
        rows = q[int(qsl[i]):int(qsl[i + 1])]
        alone = paged_attention_prefill(rows, kc, vc, batch.block_tables[i:i + 1], [0, n],
                                        batch.context_lens[i:i + 1], **kw)
        assert same_bits(full[int(qsl[i]):int(qsl[i + 1])], alone), f"sequence {i}"
    # reversed batch order
    order = list(reversed(range(len(seqs))))
    q_rev = mx.concatenate([q[int(qsl[i]):int(qsl[i + 1])] for i in order])
    qsl_rev = np.concatenate([[0], np.cumsum([ns[i] for i in order])]).astype(np.int32)
    rev = paged_attention_prefill(q_rev, kc, vc, batch.block_tables[order], qsl_rev,
                                  batch.context_lens[order], **kw)
    for row, i in enumerate(order):
        assert same_bits(rev[int(qsl_rev[row]):int(qsl_rev[row + 1])], full[int(qsl[i]):int(qsl[i + 1])])


def test_inside_mx_compile():
    rng = np.random.default_rng(9)
    seqs = [(50, 50), (130, 20)]
    batch = make_paged(rng, [c for c, _ in seqs], 1, 64, 16)
    kc, vc = batch.mx_caches()
    q = mx.array(random_q(rng, 70, 4, 64, "float32"))
    meta = [mx.array(batch.block_tables), mx.array([0, 50, 70], dtype=mx.int32), mx.array(batch.context_lens)]

    @mx.compile
    def f(q, kc, vc, bt, qsl, cl):
        return paged_attention_prefill(q, kc, vc, bt, qsl, cl, 0.125, softcap=20.0)

    eager = paged_attention_prefill(q, kc, vc, *meta, 0.125, softcap=20.0)
    assert same_bits(f(q, kc, vc, *meta), eager)


# ---- bad input --------------------------------------------------------------------


def _valid():
    kc = mx.zeros((6, 16, 2, 64))
    return dict(q=mx.zeros((10, 4, 64)), k_cache=kc, v_cache=kc,
                block_tables=np.array([[0, 1, -1], [2, -1, -1]], np.int32),
                query_start_loc=np.array([0, 7, 10], np.int32),
                context_lens=np.array([20, 5], np.int32), scale=0.1)


@pytest.mark.parametrize("change,error,match", [
    (dict(query_start_loc=np.array([0, 11, 10], np.int32)), ValueError, "non-decreasing"),
    (dict(query_start_loc=np.array([1, 7, 10], np.int32)), ValueError, r"query_start_loc\[0\] must be 0"),
    (dict(query_start_loc=np.array([0, 7, 9], np.int32)), ValueError, "must equal the number of queries 10"),
    (dict(query_start_loc=np.array([0, 10], np.int32)), ValueError, "needs num_seqs \\+ 1"),
    (dict(query_start_loc=np.array([0, 4, 10], np.int32)), ValueError, "6 queries but only 5 context"),
    (dict(query_start_loc=mx.array([0, 7, 10], dtype=mx.uint32)), TypeError, "query_start_loc must be int32"),
    (dict(context_lens=np.array([33, 5], np.int32)), ValueError, r"block_tables\[0, 2\] = -1"),
    (dict(context_lens=np.array([20, 49], np.int32)), ValueError, "exceeds the block table capacity"),
    (dict(context_lens=np.array([20, -1], np.int32)), ValueError, "must be at least 0"),
    (dict(block_tables=np.array([[0, 1, -1], [-7, -1, -1]], np.int32)), ValueError, "is not a block"),
    (dict(v_cache=mx.zeros((6, 16, 2, 32))), ValueError, "must have the same shape"),
    (dict(v_cache=mx.zeros((6, 16, 2, 64), dtype=mx.bfloat16)), TypeError, "v_cache must be float32"),
    (dict(k_cache=mx.zeros((6, 16, 3, 64)), v_cache=mx.zeros((6, 16, 3, 64))), ValueError,
     "not a multiple of num_kv_heads 3"),
    (dict(softcap=0.0), ValueError, "softcap"),
])
def test_bad_input_raises(change, error, match):
    args = _valid()
    args.update(change)
    with pytest.raises(error, match=match):
        paged_attention_prefill(**args)


def test_valid_input_for_error_cases_runs():
    mx.eval(paged_attention_prefill(**_valid()))


@pytest.mark.cpu_only("the GPU cannot check device-side metadata before the kernels run")
def test_lazy_query_start_loc_is_checked_at_evaluation():
    args = _valid()
    args["query_start_loc"] = mx.array([0, 7, 10], dtype=mx.int32)[::-1] * 1  # 10, 7, 0
    out = paged_attention_prefill(**args)
    with pytest.raises(RuntimeError, match="query_start_loc"):
        mx.eval(out)
