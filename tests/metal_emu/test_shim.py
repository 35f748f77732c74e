"""The emulator's own semantics, on the tiny kernels of selftest/shim_selftest.metal:
SIMD-group functions, threadgroup memory and barriers, simdgroup matrices,
half / bfloat rounding, swizzles, and divergence reported as errors."""

import numpy as np
import pytest

from metal_emu import emu
from metal_emu.emu import THREADGROUP
from metal_emu.storage import to_storage


@pytest.fixture(scope="module")
def selftest(emulator):  # `emulator` skips without clang
    return emu.Emulator(emu.build(only=[], extra=[emu.HERE / "selftest" / "shim_selftest.metal"]))


@pytest.mark.parametrize("dtype,name", [(np.float32, "selftest_simd_float"), (np.int32, "selftest_simd_int")])
def test_simd_functions(selftest, dtype, name):
    rng = np.random.default_rng(0)
    x = rng.integers(-50, 50, 64).astype(dtype)  # two simdgroups; integers: exact sums in any order
    out = np.zeros((64, 8), dtype)
    selftest.launch(name, [x, out], (1,), (64,))
    for sg in range(2):
        xs = x[32 * sg:32 * sg + 32]
        o = out[32 * sg:32 * sg + 32]
        lanes = np.arange(32)
        np.testing.assert_array_equal(o[:, 0], xs.sum())
        np.testing.assert_array_equal(o[:, 1], xs.max())
        np.testing.assert_array_equal(o[:, 2], xs.min())
        np.testing.assert_array_equal(o[:, 3], xs[lanes ^ 5])
        np.testing.assert_array_equal(o[:, 4], xs[3])
        np.testing.assert_array_equal(o[:, 5], np.where(lanes + 2 < 32, xs[np.minimum(lanes + 2, 31)], xs))
        np.testing.assert_array_equal(o[:, 6], np.where(lanes >= 1, xs[np.maximum(lanes - 1, 0)], xs))
        np.testing.assert_array_equal(o[:, 7], np.concatenate([[0], np.cumsum(xs)[:-1]]))


def test_threadgroup_memory_and_barrier(selftest):
    x = np.arange(3 * 96, dtype=np.float32)
    out = np.zeros_like(x)
    selftest.launch("selftest_reverse", [x, out, THREADGROUP], (3,), (96,), 96 * 4)
    np.testing.assert_array_equal(out, x.reshape(3, 96)[:, ::-1].reshape(-1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_missing_barrier_reads_unwritten_memory(selftest, seed):
    x = np.arange(96, dtype=np.float32)
    out = np.zeros_like(x)
    selftest.launch("selftest_reverse_no_barrier", [x, out, THREADGROUP], (1,), (96,), 96 * 4, seed)
    assert np.isnan(out).any() or not np.array_equal(out, x[::-1])


def test_barrier_not_reached_by_all_threads_is_an_error(selftest):
    with pytest.raises(emu.EmulatorError, match="never reaches"):
        selftest.launch("selftest_divergent_barrier", [np.zeros(64, np.float32)], (1,), (64,))


def test_collective_in_divergent_branch_is_an_error(selftest):
    with pytest.raises(emu.EmulatorError, match="divergent"):
        selftest.launch("selftest_divergent_simd", [np.zeros(32, np.float32)], (1,), (32,))


@pytest.mark.parametrize("transposed", [False, True])
def test_simdgroup_multiply_accumulate(selftest, transposed):
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3))
    out = c.copy()
    name = "selftest_matrix_transposed" if transposed else "selftest_matrix"
    selftest.launch(name, [a, b, out, THREADGROUP], (1,), (32,), 192 * 4)
    want = a.astype(np.float64) @ (b.T if transposed else b) + c
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_half_bfloat_rounding_and_swizzle(selftest):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(24) * 10.0 ** rng.integers(-8, 6, 24),
                        [65519.0, 65520.0, 1e-8, -0.0, np.inf, -np.inf, np.nan, 2.0 ** -24]]).astype(np.float32)
    h = np.zeros(32, np.float16)
    b = np.zeros(32, np.uint16)
    swz = np.zeros(32, np.float32)
    selftest.launch("selftest_types", [x, h, b, swz], (1,), (32,))
    with np.errstate(over="ignore"):  # 65520 and up round to inf, as intended
        want_h = x.astype(np.float16)
    np.testing.assert_array_equal(h.view(np.uint16), want_h.view(np.uint16))
    np.testing.assert_array_equal(b, to_storage(x, "bfloat16"))
    np.testing.assert_array_equal(swz, x.reshape(8, 4)[:, ::-1].reshape(-1))
