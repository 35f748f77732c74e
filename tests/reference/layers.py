"""NumPy references (float64) of the per-token layer ops: rms_norm, rope, gated_act."""

from __future__ import annotations

import math

import numpy as np


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w.astype(np.float64)


def rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, rotary_dims: int, traditional: bool,
         scale: float = 1.0) -> np.ndarray:
    """x [T, H, D]: pairs (j, j + R/2) or (2j, 2j+1) for j < R/2 turn by positions[t] * inv_freq[j]."""
    x = x.astype(np.float64)
    ang = positions.astype(np.float64)[:, None] * inv_freq.astype(np.float64)[None]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    out = x.copy()
    r = rotary_dims
    if traditional:
        a, b = x[..., 0:r:2], x[..., 1:r:2]
        out[..., 0:r:2], out[..., 1:r:2] = (a * c - b * s) * scale, (b * c + a * s) * scale
    else:
        a, b = x[..., : r // 2], x[..., r // 2 : r]
        out[..., : r // 2], out[..., r // 2 : r] = (a * c - b * s) * scale, (b * c + a * s) * scale
    return out


def gated_act(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    g, u = gate.astype(np.float64), up.astype(np.float64)
    if act == "silu":
        y = g / (1 + np.exp(-g))
    elif act == "gelu_tanh":
        y = 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
    else:
        from math import erf

        y = 0.5 * g * (1 + np.vectorize(erf)(g / math.sqrt(2)))
    return y * u
