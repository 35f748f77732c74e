"""Every op reads strided inputs (transposed, stepped and broadcast views) exactly as their dense
copies: on the CPU the ops take inputs as they are (no Contiguous node per input, which doubled
a decode step's graph) and copy only views that are not row-contiguous when they run."""

import mlx.core as mx
import numpy as np
import pytest

from kernels.paged import make_paged, random_q, same_bits
from kernels.test_qmatmul import weight
from tinyfast.ops import (gated_act, paged_attention_decode, paged_attention_prefill, qmatmul, rms_norm, rope,
                          write_kv)

pytestmark = pytest.mark.cpu_only("the GPU path keeps Contiguous nodes")


def _views(a: np.ndarray):
    """Lazy non-row-contiguous views with the values of `a`: every other element (last axis) of
    `a` with each element repeated twice, and the transpose of a transposed copy."""
    big = mx.repeat(mx.array(a), 2, axis=-1)[..., ::2]
    t = mx.swapaxes(mx.array(np.ascontiguousarray(np.swapaxes(a, -1, -2))), -1, -2)
    return big, t


def _strided(a: np.ndarray) -> mx.array:
    return _views(a)[0]


def test_views_hold_the_values():
    # (MLX does not expose strides to Python; a kernel reading one of these views as dense
    # rows would see the doubled or transposed buffer, and the comparisons below would fail.)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    for v in _views(a):
        np.testing.assert_array_equal(np.array(v), a)


def test_qmatmul_and_layer_ops():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    _, w = weight("q5_0", 9, 256)
    dense = qmatmul(mx.array(x), w)
    for v in _views(x):
        assert same_bits(qmatmul(v, w), dense)
    wt = rng.standard_normal(256).astype(np.float32)
    for v in _views(x):
        assert same_bits(rms_norm(v, _strided(wt[None])[0], 1e-6), rms_norm(mx.array(x), mx.array(wt), 1e-6))
        assert same_bits(gated_act(v, v, "gelu_tanh"), gated_act(mx.array(x), mx.array(x), "gelu_tanh"))
    q = rng.standard_normal((4, 3, 64)).astype(np.float32)
    pos = np.array([3, 1, 4, 1], np.int32)
    inv = (1.0 / 10000 ** (np.arange(0, 64, 2) / 64)).astype(np.float32)
    want = rope(mx.array(q), mx.array(pos), mx.array(inv))
    for v in _views(q):
        assert same_bits(rope(v, _strided(pos[None])[0], _strided(inv[None])[0]), want)
    assert same_bits(rope(mx.array(q), mx.broadcast_to(mx.array(pos[:1]), (4,)), mx.array(inv)),
                     rope(mx.array(q), mx.array(np.full(4, 3, np.int32)), mx.array(inv)))


def test_write_kv_and_attention():
    rng = np.random.default_rng(1)
    b = make_paged(rng, [5, 40], 2, 64, 16)
    kc, vc = b.mx_caches()
    k = rng.standard_normal((3, 2, 64)).astype(np.float32)
    v = rng.standard_normal((3, 2, 64)).astype(np.float32)
    slots = np.array([7, -1, 100], np.int32)
    want = write_kv(mx.array(k), mx.array(v), mx.array(np.array(kc)), mx.array(np.array(vc)), mx.array(slots))
    got = write_kv(_strided(k), _views(v)[1], kc, vc, _strided(slots[None])[0])
    for a, b_ in zip(got, want):
        assert same_bits(a, b_)

    q = random_q(rng, 2, 4, 64, "float32")
    tables, lens = np.asarray(b.block_tables, np.int32), np.asarray(b.context_lens, np.int32)
    want = paged_attention_decode(mx.array(q), kc, vc, mx.array(tables), mx.array(lens), 0.125)
    got = paged_attention_decode(_strided(q), kc, vc, _views(tables)[1], _strided(lens[None])[0], 0.125)
    assert same_bits(got, want)
    qp = random_q(rng, 7, 4, 64, "float32")
    qsl = np.array([0, 3, 7], np.int32)
    want = paged_attention_prefill(mx.array(qp), kc, vc, mx.array(tables), mx.array(qsl), mx.array(lens), 0.125)
    got = paged_attention_prefill(_views(qp)[1], kc, vc, _strided(tables), _strided(qsl[None])[0],
                                  _strided(lens[None])[0], 0.125)
    assert same_bits(got, want)
