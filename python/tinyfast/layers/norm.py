"""RMSNorm over the last axis: one native pass per row (``tinyfast.ops.rms_norm``; ``mx.fast.rms_norm`` on a GPU)."""

from __future__ import annotations

import mlx.core as mx

from tinyfast.ops import rms_norm


class RMSNorm:
    """``x * rsqrt(mean(x^2) + eps) * weight``.

    The weight is used as given: checkpoints whose norm is ``(1 + w)`` (Gemma on
    HuggingFace) are shifted once by the loader, as llama.cpp's converter does.
    """

    __slots__ = ("weight", "eps")

    def __init__(self, weight: mx.array, eps: float):
        self.weight = weight.astype(mx.float32) if weight.dtype != mx.float32 else weight
        self.eps = float(eps)

    def __call__(self, x: mx.array) -> mx.array:
        return rms_norm(x, self.weight, self.eps)
