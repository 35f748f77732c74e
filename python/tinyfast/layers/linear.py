"""Linear layers over dense weights or :class:`tinyfast.ops.QuantizedWeight`."""

from __future__ import annotations

import mlx.core as mx

from tinyfast.ops import QuantizedWeight, qmatmul


class Linear:
    """``y = x @ W.T (+ b)`` for W ``[out, in]``: dense (``mx.matmul``) or quantized
    (``qmatmul``, the native CPU kernels; no dequantized copy of W ever exists)."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight: mx.array | QuantizedWeight, bias: mx.array | None = None):
        if not isinstance(weight, (mx.array, QuantizedWeight)):
            raise TypeError(f"Linear weight must be an mx.array or QuantizedWeight, got {type(weight).__name__}")
        if isinstance(weight, mx.array) and weight.ndim != 2:
            raise ValueError(f"Linear weight must be 2-D [out, in], got shape {tuple(weight.shape)}")
        self.weight = weight
        self.bias = bias

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    def __call__(self, x: mx.array) -> mx.array:
        if isinstance(self.weight, QuantizedWeight):
            y = qmatmul(x, self.weight)
        else:
            y = x @ self.weight.T
        return y if self.bias is None else y + self.bias
