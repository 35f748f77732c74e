"""rms_norm, rope and gated_act against their NumPy references; batch invariance, compile, errors."""

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from kernels.paged import DTYPES, round_to, same_bits
from reference import layers as ref

from tinyfast.ops import gated_act, rms_norm, rope

pytestmark = pytest.mark.cpu_only("no Metal kernel for this primitive yet")

TOL = {"float32": 2e-6, "float16": 2e-3, "bfloat16": 1.6e-2}  # relative to the output's scale


def _check(got: mx.array, want: np.ndarray, dtype: str):
    got = np.array(got.astype(mx.float32))
    np.testing.assert_allclose(got, want, atol=TOL[dtype] * max(1.0, np.abs(want).max()), rtol=0)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rows,dim", [(1, 640), (3, 7), (200, 1024), (5, 256)])
def test_rms_norm(dtype, rows, dim):
    rng = np.random.default_rng(rows * dim)
    x = round_to(rng.standard_normal((rows, dim)) * 3, dtype)
    w = rng.standard_normal(dim).astype(np.float32)
    got = rms_norm(mx.array(x).astype(DTYPES[dtype]), mx.array(w), 1e-6)
    assert got.dtype == DTYPES[dtype] and got.shape == (rows, dim)
    _check(got, ref.rms_norm(x, w, 1e-6), dtype)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("tokens,heads,dim,rot,scale", [(1, 4, 256, 256, 1.0), (7, 2, 64, 32, 1.0),
                                                        (300, 8, 128, 128, 1.25), (3, 1, 16, 16, 1.0),
                                                        (2, 2, 640, 600, 1.0)])  # angles in two passes
def test_rope(dtype, traditional, tokens, heads, dim, rot, scale):
    rng = np.random.default_rng(tokens + dim)
    x = round_to(rng.standard_normal((tokens, heads, dim)), dtype)
    pos = rng.integers(0, 5000, tokens).astype(np.int32)
    inv = (1.0 / 10000 ** (np.arange(0, rot, 2) / rot)).astype(np.float32)
    got = rope(mx.array(x).astype(DTYPES[dtype]), mx.array(pos), mx.array(inv), rot, traditional=traditional,
               scale=scale)
    # float32 angles: pos * inv_freq rounds like HF's; cos/sin of a 5000-rad angle carry ~5e-4 of it.
    want = ref.rope(x, pos, inv.astype(np.float64), rot, traditional, scale)
    np.testing.assert_allclose(np.array(got.astype(mx.float32)), want,
                               atol=max(TOL[dtype] * 4, 1e-3) * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("act", ["silu", "gelu_tanh", "gelu"])
@pytest.mark.parametrize("shape", [(1, 2048), (3, 5), (40, 4099)])
def test_gated_act(dtype, act, shape):
    rng = np.random.default_rng(sum(shape))
    g, u = (round_to(rng.standard_normal(shape) * 3, dtype) for _ in range(2))
    got = gated_act(mx.array(g).astype(DTYPES[dtype]), mx.array(u).astype(DTYPES[dtype]), act)
    _check(got, ref.gated_act(g, u, act), dtype)


def test_rows_are_batch_invariant():
    rng = np.random.default_rng(0)
    x = mx.array(rng.standard_normal((300, 512)).astype(np.float32))  # big enough to use the threads
    w = mx.array(rng.standard_normal(512).astype(np.float32))
    pos = mx.array(rng.integers(0, 999, 300).astype(np.int32))
    inv = mx.array((1.0 / 10000 ** (np.arange(0, 64, 2) / 64)).astype(np.float32))
    xr = x.reshape(300, 8, 64)
    assert same_bits(rms_norm(x, w, 1e-5)[17:18], rms_norm(x[17:18], w, 1e-5))
    assert same_bits(rope(xr, pos, inv)[17:18], rope(xr[17:18], pos[17:18], inv))
    assert same_bits(gated_act(x, x, "gelu_tanh")[17:18], gated_act(x[17:18], x[17:18], "gelu_tanh"))


def test_under_compile_and_parameters_are_part_of_the_op():
    x = mx.array(np.random.default_rng(1).standard_normal((4, 2, 32)).astype(np.float32))
    w = mx.ones((32,))
    pos, inv = mx.array([0, 1, 2, 3], dtype=mx.int32), mx.array(np.full(16, 0.1, np.float32))

    @mx.compile
    def f(x):  # same inputs, different parameters: must not be merged as one op
        return (rms_norm(x, w, 1e-6) - rms_norm(x, w, 10.0), rope(x, pos, inv) - rope(x, pos, inv, traditional=True),
                gated_act(x, x, "silu") - gated_act(x, x, "gelu"))

    for a, b in zip(f(x), (rms_norm(x, w, 1e-6) - rms_norm(x, w, 10.0),
                           rope(x, pos, inv) - rope(x, pos, inv, traditional=True),
                           gated_act(x, x, "silu") - gated_act(x, x, "gelu"))):
        assert mx.abs(a).max().item() > 0.01
        assert same_bits(a, b)


def test_errors():
    x = mx.zeros((2, 3, 8))
    with pytest.raises(TypeError, match="rms_norm: weight must be float32"):
        rms_norm(x, mx.ones(8, dtype=mx.float16), 1e-6)
    with pytest.raises(ValueError, match="weight"):
        rms_norm(x, mx.ones(7), 1e-6)
    with pytest.raises(ValueError, match="positions has 1 entries for 2 tokens"):
        rope(x, mx.array([0], dtype=mx.int32), mx.ones(4))
    with pytest.raises(ValueError, match="rotary_dims"):
        rope(x, mx.array([0, 1], dtype=mx.int32), mx.ones(4), 6)
    with pytest.raises(TypeError, match="positions must be int32"):
        rope(x, mx.array([0.0, 1.0]), mx.ones(4))
    with pytest.raises(ValueError, match="act must be"):
        gated_act(x, x, "relu")
    with pytest.raises(ValueError, match="same shape"):
        gated_act(x, x[:1], "silu")


def test_baseline_build_matches_reference():
    """The row kernels are built twice (baseline flags, and AVX2/FMA/F16C on x86-64); 'auto'
    uses the second where the CPU has it. Run the reference checks once more with SIMD levels
    disabled so the baseline build is tested too (every dtype, tails, both rope layouts)."""
    code = (
        "import mlx.core as mx, numpy as np\n"
        "from reference import layers as ref\n"
        "from kernels.paged import DTYPES, round_to\n"
        "from tinyfast.ops import gated_act, rms_norm, rope\n"
        "import tinyfast\n"
        "assert tinyfast.cpu_features()['kernel_level'] == 'scalar', tinyfast.cpu_features()\n"
        "TOL = {'float32': 2e-6, 'float16': 2e-3, 'bfloat16': 1.6e-2}\n"
        "rng = np.random.default_rng(0)\n"
        "def close(got, want, tol):\n"
        "    np.testing.assert_allclose(np.array(got.astype(mx.float32)), want, atol=tol * max(1.0, np.abs(want).max()), rtol=0)\n"
        "for dt in DTYPES:\n"
        "    x = round_to(rng.standard_normal((5, 203)) * 3, dt)\n"
        "    w = rng.standard_normal(203).astype(np.float32)\n"
        "    close(rms_norm(mx.array(x).astype(DTYPES[dt]), mx.array(w), 1e-6), ref.rms_norm(x, w, 1e-6), TOL[dt])\n"
        "    g, u = (round_to(rng.standard_normal((3, 1001)) * 3, dt) for _ in range(2))\n"
        "    for act in ('silu', 'gelu_tanh', 'gelu'):\n"
        "        close(gated_act(mx.array(g).astype(DTYPES[dt]), mx.array(u).astype(DTYPES[dt]), act), ref.gated_act(g, u, act), TOL[dt])\n"
        "    for trad in (False, True):\n"
        "        x = round_to(rng.standard_normal((3, 2, 640)), dt)\n"
        "        pos = rng.integers(0, 5000, 3).astype(np.int32)\n"
        "        inv = (1.0 / 10000 ** (np.arange(0, 600, 2) / 600)).astype(np.float32)\n"
        "        got = rope(mx.array(x).astype(DTYPES[dt]), mx.array(pos), mx.array(inv), 600, traditional=trad)\n"
        "        want = ref.rope(x, pos, inv.astype(np.float64), 600, trad)\n"
        "        np.testing.assert_allclose(np.array(got.astype(mx.float32)), want, atol=max(TOL[dt] * 4, 1e-3) * np.abs(want).max(), rtol=0)\n"
    )
    tests_dir = os.path.dirname(os.path.dirname(__file__))
    env = dict(os.environ, TINYFAST_CPU_DISABLE="avx512f,avx2,neon", PYTHONPATH=tests_dir)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("g++") is None
                    or shutil.which("nm") is None, reason="needs x86-64 g++ and nm")
def test_avx2_object_exports_nothing_shared(tmp_path):
    """A weak (inline/template) symbol compiled with AVX2 could be picked by the linker for
    baseline callers and fault on CPUs without AVX2: the object may define only names that
    say avx2."""
    csrc = Path(__file__).resolve().parents[2] / "csrc"
    obj = tmp_path / "layer_ops_avx2.o"
    subprocess.run(["g++", "-std=c++20", "-O2", "-ffp-contract=off", f"-I{csrc}", "-mavx2", "-mfma", "-mf16c", "-c",
                    str(csrc / "cpu/layer_ops_avx2.cpp"), "-o", str(obj)], check=True)
    syms = subprocess.run(["nm", "--defined-only", "--extern-only", str(obj)], check=True,
                          capture_output=True, text=True).stdout.split("\n")
    names = [line.split()[-1] for line in syms if line.strip()]
    assert names and all("avx2" in n for n in names), names
