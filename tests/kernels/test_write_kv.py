"""write_kv: matches the reference scatter, writes the pools in place (no copy),
orders before attention, works under mx.compile, and rejects bad input."""

import mlx.core as mx
import numpy as np
import pytest

from kernels.paged import DTYPES, same_bits
from reference import attention as ref
from tinyfast.ops import paged_attention_decode, write_kv


def _address(a: mx.array) -> int:
    return np.array(a, copy=False).__array_interface__["data"][0]


def _pools(shape, dtype=mx.float32):
    k, v = mx.zeros(shape, dtype=dtype), mx.zeros(shape, dtype=dtype)
    mx.eval(k, v)
    return k, v


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("num_tokens", [0, 1, 5, 300])
def test_matches_reference(dtype, block_size, num_tokens):
    rng = np.random.default_rng(num_tokens * 7 + block_size)
    num_blocks, kv_heads, dim = 40, 2, 64
    shape = (num_blocks, block_size, kv_heads, dim)
    init_k = rng.standard_normal(shape).astype(np.float32)
    init_v = rng.standard_normal(shape).astype(np.float32)
    slots = rng.permutation(num_blocks * block_size)[:num_tokens].astype(np.int32)
    slots[::4] = -1  # padding tokens
    k = rng.standard_normal((num_tokens, kv_heads, dim)).astype(np.float32)
    v = rng.standard_normal((num_tokens, kv_heads, dim)).astype(np.float32)
    dt = DTYPES[dtype]
    kc, vc = mx.array(init_k).astype(dt), mx.array(init_v).astype(dt)
    ko, vo = write_kv(mx.array(k).astype(dt), mx.array(v).astype(dt), kc, vc, slots)
    want_k, want_v = ref.write_kv(np.array(mx.array(k).astype(dt).astype(mx.float32)),
                                  np.array(mx.array(v).astype(dt).astype(mx.float32)),
                                  np.array(kc.astype(mx.float32)), np.array(vc.astype(mx.float32)), slots)
    assert ko.dtype == dt and ko.shape == shape
    np.testing.assert_array_equal(np.array(ko.astype(mx.float32)), want_k)
    np.testing.assert_array_equal(np.array(vo.astype(mx.float32)), want_v)


def test_in_place_no_copy():
    shape = (4096, 16, 2, 128)  # 64 MB per pool
    kc, vc = _pools(shape)
    k_addr, v_addr = _address(kc), _address(vc)
    k = mx.ones((3, 2, 128))
    mx.eval(k)
    before = mx.get_active_memory()
    ko, vo = write_kv(k, k * 2, kc, vc, mx.array([5, 16 * 4000 + 3, -1], dtype=mx.int32))
    mx.eval(ko, vo)
    # The outputs are the pools' buffers ...
    assert _address(ko) == k_addr and _address(vo) == v_addr
    # ... no pool-sized allocation happened ...
    assert mx.get_active_memory() - before < 1 << 20
    # ... and the arrays Python holds see the write.
    assert kc[0, 5].tolist() == [[1.0] * 128] * 2
    assert vc[4000, 3, 1, 0].item() == 2.0
    assert kc[0, 6, 0, 0].item() == 0.0


def test_write_into_slice_of_a_bigger_buffer():
    """A per-layer pool sliced from one allocation is written where it lives. (Use a
    range slice: MLX's integer indexing layers[1] gathers into a new buffer.)"""
    layers = mx.zeros((3, 8, 4, 1, 16))
    mx.eval(layers)
    pool = layers[1:2].reshape(8, 4, 1, 16)
    ko, _ = write_kv(mx.full((1, 1, 16), 7.0), mx.full((1, 1, 16), 7.0), pool, pool,
                     mx.array([9], dtype=mx.int32))
    mx.eval(ko)
    assert layers[1, 2, 1, 0, 0].item() == 7.0
    assert float(mx.abs(layers).sum().item()) == 7.0 * 16


def test_attention_reads_the_written_rows():
    """write_kv's outputs feed attention in the same graph: the write happens first."""
    rng = np.random.default_rng(0)
    kc, vc = _pools((4, 8, 1, 32))
    ctx = 11  # slots 0..10 of blocks [2, 0]
    k = rng.standard_normal((ctx, 1, 32)).astype(np.float32)
    v = rng.standard_normal((ctx, 1, 32)).astype(np.float32)
    table = np.array([[2, 0]], np.int32)
    slots = np.array([table[0, p // 8] * 8 + p % 8 for p in range(ctx)], np.int32)
    q = rng.standard_normal((1, 2, 32)).astype(np.float32)
    ko, vo = write_kv(mx.array(k), mx.array(v), kc, vc, slots)
    out = paged_attention_decode(mx.array(q), ko, vo, table, [ctx], 0.2)
    want = ref.dense_attention(q, k, v, 0.2, q_offset=ctx - 1)
    np.testing.assert_allclose(np.array(out), want, rtol=2e-5, atol=2e-5)


def test_decode_step_under_mx_compile():
    """A compiled decode step (write + attend) writes the Python-held pools in place."""
    rng = np.random.default_rng(1)
    kc, vc = _pools((8, 16, 2, 64))
    kc_addr = _address(kc)

    @mx.compile
    def step(q, k, v, kc, vc, slots, table, lens):
        ko, vo = write_kv(k, v, kc, vc, slots)
        return paged_attention_decode(q, ko, vo, table, lens, 0.125), ko, vo

    keys, vals = [], []
    table = mx.array([[3, 5]], dtype=mx.int32)
    for pos in range(20):
        k = mx.array(rng.standard_normal((1, 2, 64)).astype(np.float32))
        v = mx.array(rng.standard_normal((1, 2, 64)).astype(np.float32))
        q = mx.array(rng.standard_normal((1, 4, 64)).astype(np.float32))
        keys.append(np.array(k[0]))
        vals.append(np.array(v[0]))
        slot = [3, 5][pos // 16] * 16 + pos % 16
        out, ko, _ = step(q, k, v, kc, vc, mx.array([slot], dtype=mx.int32), table,
                          mx.array([pos + 1], dtype=mx.int32))
        mx.eval(out)
        want = ref.dense_attention(np.array(q), np.stack(keys), np.stack(vals), 0.125, q_offset=pos)
        np.testing.assert_allclose(np.array(out), want, rtol=2e-5, atol=2e-5)
    assert _address(ko) == kc_addr
    np.testing.assert_array_equal(np.array(kc[5, 3]), keys[19])


def test_same_result_in_and_out_of_compile():
    rng = np.random.default_rng(2)
    k = mx.array(rng.standard_normal((4, 1, 8)).astype(np.float32))
    a, _ = _pools((4, 4, 1, 8))
    b, _ = _pools((4, 4, 1, 8))
    slots = mx.array([3, -1, 9, 0], dtype=mx.int32)
    mx.eval(write_kv(k, k, a, a, slots)[0])
    mx.eval(mx.compile(lambda k, p, s: write_kv(k, k, p, p, s)[0])(k, b, slots))
    assert same_bits(a, b)


# ---- bad input --------------------------------------------------------------------


def _valid():
    kc = mx.zeros((4, 8, 2, 16))
    return dict(k=mx.ones((3, 2, 16)), v=mx.ones((3, 2, 16)), k_cache=kc, v_cache=mx.zeros((4, 8, 2, 16)),
                slot_mapping=np.array([0, 31, -1], np.int32))


@pytest.mark.parametrize("change,error,match", [
    (dict(slot_mapping=np.array([0, 32, -1], np.int32)), ValueError, r"slot_mapping\[1\] = 32 is outside"),
    (dict(slot_mapping=np.array([0, -2, -1], np.int32)), ValueError, r"slot_mapping\[1\] = -2"),
    (dict(slot_mapping=np.array([4, 4, -1], np.int32)), ValueError, "slot 4 appears twice"),
    (dict(slot_mapping=np.array([0, 1], np.int32)), ValueError, "2 entries for 3 tokens"),
    (dict(slot_mapping=np.array([0, 1, 2**40])), ValueError, "outside the int32 range"),
    (dict(slot_mapping=mx.array([0, 1, 2], dtype=mx.int64)), TypeError, "slot_mapping must be int32"),
    (dict(k=mx.ones((3, 2, 16), dtype=mx.float16)), TypeError, "k must be float32"),
    (dict(k_cache=mx.zeros((4, 8, 2, 16), dtype=mx.int32)), TypeError, "k_cache must be float32, float16"),
    (dict(v=mx.ones((3, 2, 8))), ValueError, "must have the same shape"),
    (dict(k=mx.ones((3, 1, 16)), v=mx.ones((3, 1, 16))), ValueError, "does not match the cache rows"),
    (dict(v_cache=mx.zeros((5, 8, 2, 16))), ValueError, "must have the same shape"),
    (dict(k_cache=mx.zeros((4, 8, 32))), ValueError, "k_cache must be 4-D"),
])
def test_bad_input_raises(change, error, match):
    args = _valid()
    args.update(change)
    with pytest.raises(error, match=match):
        write_kv(**args)


def test_strided_pool_is_rejected_at_evaluation():
    big = mx.zeros((4, 8, 2, 32))
    view = big[..., ::2]
    ko, _ = write_kv(mx.ones((1, 2, 16)), mx.ones((1, 2, 16)), view, view, np.array([0], np.int32))
    with pytest.raises(ValueError, match="row-contiguous"):
        mx.eval(ko)


@pytest.mark.cpu_only("the GPU cannot check device-side slot mappings before the kernel runs")
def test_lazy_bad_slot_is_caught_before_any_write():
    kc, vc = _pools((4, 8, 2, 16))
    slots = mx.array([1, 40], dtype=mx.int32) * 1  # lazy
    ko, _ = write_kv(mx.ones((2, 2, 16)), mx.ones((2, 2, 16)), kc, vc, slots)
    with pytest.raises(RuntimeError, match="outside the cache"):
        mx.eval(ko)
    assert float(kc.sum().item()) == 0.0
