"""GGUF quantized mat-vec entry points in the emulator against a float64
x @ dequantize(W).T (reference.quant.dequantize, bit-exact dequantization).

The Metal kernel multiplies x in float32 (no 8-bit activation rounding, unlike
the CPU kernels), so the bound is float32 accumulation over K terms of the
weight magnitudes reference.qmatmul defines, plus the output rounding."""

import numpy as np
import pytest

from metal_emu import params
from metal_emu.storage import from_storage, to_storage
from reference import qmatmul as rq

FORMATS = ["q4_0", "q5_0", "q8_0", "q4_k", "q6_k"]
DTYPES = ["float32", "float16", "bfloat16"]
U = 2.0 ** -24


def run_qmatmul(emulator, fmt, dtype, x, raw, n, k, seed=0):
    xs = to_storage(x, dtype)
    y = to_storage(np.full((x.shape[0], n), np.nan, np.float32), dtype)
    p = params.QMatvecParams(x.shape[0], n, k, raw.shape[1])
    rows_per_group = params.QMATVEC_SIMDGROUPS * params.QMATVEC_ROWS
    emulator.launch(f"tf_qmatmul_{fmt}_{dtype}", [xs, np.ascontiguousarray(raw), y, p],
                    (-(-n // rows_per_group), x.shape[0]), (32 * params.QMATVEC_SIMDGROUPS,), 0, seed)
    return from_storage(y, dtype)


def check(emulator, fmt, dtype, m, n, k, kind="quantized", seed=0):
    rng = np.random.default_rng([seed, m, n, k, FORMATS.index(fmt), kind == "random"])
    wt = rq.make_weight(fmt, n, k, rng, kind)
    x = from_storage(to_storage(rq.random_activations(m, k, rng), dtype), dtype)  # what the kernel sees
    got = run_qmatmul(emulator, fmt, dtype, x, wt["raw"], n, k, seed)
    want = x.astype(np.float64) @ wt["w"].astype(np.float64).T
    nt = k + 64  # terms: K products, then the lane sums and the 32-lane reduction
    tol = nt * U / (1 - nt * U) * (np.abs(x).astype(np.float64) @ wt["wabs"].T)
    if dtype == "float16":
        tol += (np.abs(want) + tol) * 2.0 ** -11 + 2.0 ** -25
    elif dtype == "bfloat16":
        tol += (np.abs(want) + tol) * 2.0 ** -8
    err = np.abs(got - want)
    assert np.all(err <= tol), f"max excess {np.max(err - tol)} at {np.unravel_index(np.argmax(err - tol), err.shape)}"


SHAPES = [(1, 5, 256), (3, 13, 512), (2, 4, 1024 + 256)]  # M, N (partial row groups), K (chunks > 32 lanes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", FORMATS)
def test_matches_reference(emulator, fmt, shape, dtype):
    check(emulator, fmt, dtype, *shape)


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_blocks_every_code(emulator, fmt):
    """Uniformly random block bytes: every code value and scale pattern occurs."""
    check(emulator, fmt, "float32", 2, 9, 2048, kind="random", seed=1)


@pytest.mark.parametrize("fmt", ["q4_0", "q5_0", "q8_0"])
def test_legacy_formats_short_rows(emulator, fmt):
    """K = 32 and 96: fewer chunks than lanes."""
    check(emulator, fmt, "float16", 1, 7, 32)
    check(emulator, fmt, "float32", 2, 3, 96)
