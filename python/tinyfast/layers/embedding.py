"""Token embeddings (and the tied LM head) over dense or quantized tables.

A quantized table is never dequantized as a whole: a lookup gathers the T raw
rows it needs (``mx.take`` over the uint8 blocks, or over codes/scales/biases
for MLX affine) and runs the native ``dequantize`` on just those rows. That is
two lazy ops, batch invariant and bit-identical to dequantizing the full table,
and it reads T rows (T * 680 bytes for Gemma's q8_0 table) instead of the
whole table (170 MB), so no separate C++ embedding op is needed.
"""

from __future__ import annotations

import mlx.core as mx

from tinyfast.ops import QuantizedWeight, dequantize, qmatmul


def embedding_lookup(table: mx.array | QuantizedWeight, ids: mx.array) -> mx.array:
    """Rows ``table[ids]`` as float32 ``[*ids.shape, dim]``."""
    if isinstance(table, QuantizedWeight):
        n = ids.size
        rows = [mx.take(a, ids.reshape(-1), axis=0) for a in table.arrays]
        if table.scales is None:
            part = QuantizedWeight(rows[0], table.format, (n, table.K))
        else:
            part = QuantizedWeight(rows[0], table.format, (n, table.K), scales=rows[1], biases=rows[2],
                                   group_size=table.group_size)
        return dequantize(part).reshape(*ids.shape, table.K)
    out = mx.take(table, ids, axis=0)
    return out if out.dtype == mx.float32 else out.astype(mx.float32)


class Embedding:
    """``table [vocab, dim]``: lookup by token id, and ``as_linear`` for a tied LM head."""

    __slots__ = ("weight",)

    def __init__(self, weight: mx.array | QuantizedWeight):
        self.weight = weight

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    def __call__(self, ids: mx.array) -> mx.array:
        return embedding_lookup(self.weight, ids)

    def as_linear(self, x: mx.array) -> mx.array:
        """``x @ table.T``: logits over the vocabulary from hidden states."""
        if isinstance(self.weight, QuantizedWeight):
            return qmatmul(x, self.weight)
        return x @ self.weight.T
