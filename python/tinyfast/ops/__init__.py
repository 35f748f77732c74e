"""Native ops as MLX primitives (lazy, usable inside ``mx.compile``)."""

from tinyfast.ops.attention import paged_attention_decode, paged_attention_prefill, write_kv
from tinyfast.ops.layers import gated_act, rms_norm, rope
from tinyfast.ops.quant import QuantizedWeight, dequantize, qmatmul

__all__ = [
    "write_kv",
    "paged_attention_decode",
    "paged_attention_prefill",
    "QuantizedWeight",
    "dequantize",
    "qmatmul",
    "rms_norm",
    "rope",
    "gated_act",
]
