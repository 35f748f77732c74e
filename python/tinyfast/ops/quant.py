"""Quantized weights kept in their storage format, and the ops that use them.

``QuantizedWeight`` holds a weight ``W[N, K]`` (N output rows, K the reduction
dim) exactly as it is stored:

* GGUF formats ``q4_0``, ``q5_0``, ``q8_0``, ``q4_k``, ``q6_k``: the raw blocks as
  a uint8 ``mx.array`` ``[N, row_bytes]``; each row is K/block contiguous
  blocks (no load-time dequantization).
* MLX affine ``affine4`` / ``affine8``: the ``(codes uint32 [N, K*bits/32],
  scales [N, K/g], biases [N, K/g])`` triple ``mx.quantize`` returns and
  mlx-community checkpoints store, with group size g in {32, 64, 128}.

``qmatmul(x, w)`` computes ``x @ dequantize(w).T`` with native CPU kernels
(an MLX primitive: lazy, works in ``mx.compile``); ``dequantize(w)`` returns W
as float32.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from tinyfast import _C

# format -> (elements per block, bytes per block)
GGUF_BLOCKS = {
    "q4_0": (32, 18),
    "q5_0": (32, 22),
    "q8_0": (32, 34),
    "q4_k": (256, 144),
    "q6_k": (256, 210),
}
AFFINE_BITS = {"affine4": 4, "affine8": 8}
FORMATS = tuple(GGUF_BLOCKS) + tuple(AFFINE_BITS)
AFFINE_GROUP_SIZES = (32, 64, 128)
_FLOAT_DTYPES = (mx.float32, mx.float16, mx.bfloat16)


def _format_name(fmt: str) -> str:
    if not isinstance(fmt, str):
        raise TypeError(f"format must be a string such as 'q4_k', got {type(fmt).__name__}")
    name = fmt.lower()
    if name not in FORMATS:
        raise ValueError(f"unknown quantization format {fmt!r} (supported: {', '.join(FORMATS)})")
    return name


def _shape2(shape) -> tuple[int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a pair (N, K), got {shape!r}") from None
    if len(dims) != 2 or min(dims) <= 0:
        raise ValueError(f"shape must be a pair of positive ints (N, K), got {shape!r}")
    return dims


def _as_mx(a: Any, what: str) -> mx.array:
    """mx.array from an mx.array, NumPy array, or bytes-like object."""
    if isinstance(a, mx.array):
        return a
    if isinstance(a, (bytes, bytearray, memoryview)):
        return mx.array(np.frombuffer(a, dtype=np.uint8))
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "uif":
            raise TypeError(f"{what}: unsupported NumPy dtype {a.dtype}")
        return mx.array(np.ascontiguousarray(a))
    raise TypeError(f"{what} must be an mx.array, a NumPy array or bytes, got {type(a).__name__}")


class QuantizedWeight:
    """A weight W[N, K] in a quantized storage format (see the module docstring).

    ``QuantizedWeight(data, "q4_k", (N, K))`` wraps raw GGUF blocks (bytes,
    NumPy or MLX uint8 of exactly N * row_bytes bytes, any shape);
    ``QuantizedWeight.from_affine(codes, scales, biases, group_size=64, bits=4)``
    wraps an MLX affine triple. Sizes, dtypes and divisibility are checked here:
    a mismatch raises ValueError (shape/size) or TypeError (dtype).
    """

    __slots__ = ("format", "shape", "data", "scales", "biases", "group_size")

    def __init__(self, data, format: str, shape, *, scales=None, biases=None, group_size: int | None = None):
        fmt = _format_name(format)
        n, k = _shape2(shape)
        self.format = fmt
        self.shape = (n, k)
        if fmt in GGUF_BLOCKS:
            if scales is not None or biases is not None or group_size is not None:
                raise ValueError(f"{fmt}: scales/biases/group_size only apply to affine formats")
            qk, nb = GGUF_BLOCKS[fmt]
            if k % qk:
                raise ValueError(f"{fmt}: K={k} is not a multiple of the {qk}-element block")
            arr = _as_mx(data, f"{fmt} data")
            if arr.dtype != mx.uint8:
                raise TypeError(f"{fmt}: block data must be uint8 bytes, got {arr.dtype}")
            row_bytes = k // qk * nb
            if arr.size != n * row_bytes:
                raise ValueError(
                    f"{fmt}: {arr.size} bytes do not hold a [{n}, {k}] weight "
                    f"(expected {n} rows x {row_bytes} bytes = {n * row_bytes})")
            self.data = arr.reshape(n, row_bytes)
            self.scales = self.biases = None
            self.group_size = None
            return
        bits = AFFINE_BITS[fmt]
        if scales is None or biases is None or group_size is None:
            raise ValueError(f"{fmt}: scales, biases and group_size are required")
        if group_size not in AFFINE_GROUP_SIZES:
            raise ValueError(f"{fmt}: group_size must be one of {AFFINE_GROUP_SIZES}, got {group_size}")
        if k % group_size:
            raise ValueError(f"{fmt}: K={k} is not a multiple of group_size {group_size}")
        codes = _as_mx(data, f"{fmt} codes")
        scales = _as_mx(scales, f"{fmt} scales")
        biases = _as_mx(biases, f"{fmt} biases")
        if codes.dtype != mx.uint32:
            raise TypeError(f"{fmt}: codes must be uint32 (as mx.quantize returns), got {codes.dtype}")
        if scales.dtype not in _FLOAT_DTYPES or biases.dtype != scales.dtype:
            raise TypeError(f"{fmt}: scales and biases must share one dtype among float32/float16/bfloat16, "
                            f"got {scales.dtype} and {biases.dtype}")
        want = {"codes": (codes, (n, k * bits // 32)), "scales": (scales, (n, k // group_size)),
                "biases": (biases, (n, k // group_size))}
        for what, (a, shp) in want.items():
            if tuple(a.shape) != shp:
                raise ValueError(f"{fmt}: {what} have shape {tuple(a.shape)}, expected {shp} "
                                 f"for a [{n}, {k}] weight with group_size {group_size}")
        self.data, self.scales, self.biases = codes, scales, biases
        self.group_size = int(group_size)

    # ------------------------------------------------------------ builders

    @classmethod
    def from_affine(cls, codes, scales, biases, *, group_size: int = 64, bits: int = 4) -> "QuantizedWeight":
        """Wraps MLX's (codes, scales, biases); N and K come from the arrays."""
        if bits not in (4, 8):
            raise ValueError(f"affine bits must be 4 or 8, got {bits}")
        codes = _as_mx(codes, "codes")
        if codes.ndim != 2:
            raise ValueError(f"codes must be 2-D [N, K*bits/32], got shape {tuple(codes.shape)}")
        n, words = codes.shape
        return cls(codes, f"affine{bits}", (n, words * 32 // bits), scales=scales, biases=biases,
                   group_size=group_size)

    @classmethod
    def quantize_affine(cls, w, *, bits: int = 4, group_size: int = 64) -> "QuantizedWeight":
        """Quantizes a float W[N, K] with ``mx.quantize`` (MLX's affine format)."""
        w = _as_mx(w, "w")
        codes, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
        return cls.from_affine(codes, scales, biases, group_size=group_size, bits=bits)

    # ---------------------------------------------------------- properties

    @property
    def N(self) -> int:
        return self.shape[0]

    @property
    def K(self) -> int:
        return self.shape[1]

    @property
    def bits(self) -> int | None:
        return AFFINE_BITS.get(self.format)

    @property
    def arrays(self) -> list[mx.array]:
        """The storage arrays in the order the native ops take them."""
        if self.scales is None:
            return [self.data]
        return [self.data, self.scales, self.biases]

    @property
    def nbytes(self) -> int:
        """Bytes a matrix-vector product must read."""
        return sum(a.nbytes for a in self.arrays)

    def dequantize(self) -> mx.array:
        return dequantize(self)

    def __repr__(self) -> str:
        extra = f", group_size={self.group_size}, scales={self.scales.dtype}" if self.scales is not None else ""
        return f"QuantizedWeight({self.format}, shape={self.shape}{extra}, nbytes={self.nbytes})"


def _check_weight(w) -> QuantizedWeight:
    if not isinstance(w, QuantizedWeight):
        raise TypeError(f"w must be a QuantizedWeight, got {type(w).__name__}")
    return w


def qmatmul(x: mx.array, w: QuantizedWeight, *, kernel: str = "auto") -> mx.array:
    """``x @ dequantize(w).T`` for x [..., K] (float32/float16/bfloat16); result
    [..., N] in x's dtype, accumulated in float32 from 8-bit quantized
    activations (per 32 elements; per 256 for q4_k/q6_k).

    ``kernel`` selects the CPU code path ("auto", "scalar", "avx2", "neon",
    "neon_dotprod"; see ``kernels()``); the default is the best one this CPU
    supports.
    """
    w = _check_weight(w)
    if not isinstance(x, mx.array):
        raise TypeError(f"x must be an mx.array, got {type(x).__name__}")
    return _C.qmatmul(x, w.arrays, w.format, w.N, w.K, w.group_size or 0, kernel)


def dequantize(w: QuantizedWeight) -> mx.array:
    """W as float32 [N, K] (bit-identical to tests/reference/quant.py)."""
    w = _check_weight(w)
    return _C.dequantize(w.arrays, w.format, w.N, w.K, w.group_size or 0)


def kernels() -> list[str]:
    """CPU kernel levels available here, best first ("auto" picks the first)."""
    return list(_C.qmatmul_kernels())
