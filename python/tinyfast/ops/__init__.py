"""Native ops as MLX primitives."""

from tinyfast.ops.quant import QuantizedWeight, dequantize, qmatmul

__all__ = ["QuantizedWeight", "dequantize", "qmatmul"]
