"""Rotary position embeddings at arbitrary per-token positions of a ragged batch.

``tinyfast.ops.rope`` rotates the flat batch ``x [T, H, D]`` by each token's own
position: one native op per call, no cos/sin tables, any mix of prefill chunks
and decode tokens. (``mx.fast.rope`` can do the same on ``[T, H, 1, D]`` with a
per-entry ``offset``, but on the CPU it is a graph of ~15 ops.)

Frequencies follow HuggingFace's ``modeling_rope_utils`` (default, linear,
llama3, yarn), computed in float64 and rounded once to float32.
``traditional=True`` rotates interleaved pairs (GPT-J); False rotates the two
halves (NeoX / HF ``rotate_half``). llama.cpp's converter permutes the Q/K rows
of ``llama`` GGUF files into the interleaved order, so those use
``traditional=True`` with the weights as stored, which is exactly HF's
``rotate_half`` on the original weights (attention only sees q . k, and both are
permuted alike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from tinyfast.ops import rope


@dataclass(frozen=True)
class RopeParams:
    """Everything that defines the rotation of one attention layer."""

    dims: int
    """Rotated features per head (the first ``dims`` of ``head_dim``)."""
    base: float
    type: str = "default"
    """``default``, ``linear``, ``llama3`` or ``yarn``."""
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True
    traditional: bool = False
    freq_factors: tuple[float, ...] | None = None
    """llama.cpp's ``rope_freqs.weight``: per-pair divisors of the frequencies (llama3 GGUFs)."""


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def inv_frequencies(p: RopeParams) -> tuple[np.ndarray, float]:
    """(inverse frequencies [dims/2] as float64, attention factor) for ``p``."""
    d = p.dims
    inv = 1.0 / (p.base ** (np.arange(0, d, 2, dtype=np.float64) / d))
    scale = 1.0
    if p.type in ("default", "none"):
        pass
    elif p.type == "linear":
        inv = inv / p.factor
    elif p.type == "llama3":
        old = float(p.original_max_position_embeddings)
        low_wavelen = old / p.low_freq_factor
        high_wavelen = old / p.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / p.factor, inv)
        smooth = (old / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor)
        smoothed = (1 - smooth) * scaled / p.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    elif p.type == "yarn":
        factor = p.factor
        if p.attention_factor is not None:
            scale = p.attention_factor
        elif p.mscale and p.mscale_all_dim:
            scale = _yarn_mscale(factor, p.mscale) / _yarn_mscale(factor, p.mscale_all_dim)
        else:
            scale = _yarn_mscale(factor)
        orig = float(p.original_max_position_embeddings)

        def correction_dim(rotations: float) -> float:
            return (d * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(p.base))

        low, high = correction_dim(p.beta_fast), correction_dim(p.beta_slow)
        if p.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp
        inv = (inv / factor) * (1 - extrapolation) + inv * extrapolation
    else:
        raise ValueError(f"unsupported rope scaling type {p.type!r} (default, linear, llama3, yarn)")
    if p.freq_factors is not None:
        ff = np.asarray(p.freq_factors, dtype=np.float64)
        if ff.shape != inv.shape:
            raise ValueError(f"rope freq_factors have {ff.size} entries, expected {inv.size}")
        inv = inv / ff
    return inv, scale


class RotaryEmbedding:
    """Applies the rotation of ``params`` to ``x [T, H, D]`` at ``positions [T]`` (int32)."""

    def __init__(self, params: RopeParams):
        self.params = params
        inv, self.scale = inv_frequencies(params)
        self.inv_freq = mx.array(inv.astype(np.float32))
        mx.eval(self.inv_freq)

    def __call__(self, x: mx.array, positions: mx.array) -> mx.array:
        p = self.params
        return rope(x, positions, self.inv_freq, p.dims, traditional=p.traditional, scale=self.scale)
