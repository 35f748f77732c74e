"""Per-token layer ops as native MLX primitives: ``rms_norm``, ``rope``, ``gated_act``.

MLX's CPU backend runs ``mx.fast.rms_norm`` / ``mx.fast.rope`` as graphs of 7-15
elementwise ops (no CPU kernel), i.e. ~100 dispatched ops per transformer layer
eagerly, and under ``mx.compile`` fused C++ kernels that MLX compiles with the
system compiler on first use (~2 s each, ~20 s before a cold machine's first
decode step). These ops are one primitive each, float32 math, and batch invariant:
a row's result does not depend on the other rows. On a GPU stream they defer to
``mx.fast`` / MLX ops.
"""

from __future__ import annotations

import mlx.core as mx

from tinyfast import _C

__all__ = ["rms_norm", "rope", "gated_act"]

GATED_ACTS = ("silu", "gelu_tanh", "gelu")


def _on_gpu() -> bool:
    return mx.default_device() == mx.gpu


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    """``x * rsqrt(mean(x^2, axis=-1) + eps) * weight`` for x ``[..., dim]``; weight float32 ``[dim]``."""
    if _on_gpu():
        return mx.fast.rms_norm(x, weight, eps)
    return _C.rms_norm(x, weight, float(eps))


def rope(x: mx.array, positions: mx.array, inv_freq: mx.array, rotary_dims: int | None = None, *,
         traditional: bool = False, scale: float = 1.0) -> mx.array:
    """Rotary embedding of x ``[tokens, heads, head_dim]`` at ``positions`` (int32 ``[tokens]``).

    Feature pair ``j < rotary_dims / 2`` turns by ``positions[t] * inv_freq[j]`` (float32
    ``[rotary_dims / 2]``): pairs ``(j, j + rotary_dims/2)`` (NeoX / HF ``rotate_half``) or
    ``(2j, 2j+1)`` with ``traditional`` (GPT-J). Rotated features are multiplied by ``scale``
    (yarn); features past ``rotary_dims`` pass through.
    """
    rotary_dims = x.shape[-1] if rotary_dims is None else int(rotary_dims)
    if _on_gpu():
        t, h, d = x.shape
        y = mx.fast.rope(x.reshape(t, h, 1, d), rotary_dims, traditional=traditional, base=None, scale=1.0,
                         offset=positions, freqs=1.0 / inv_freq).reshape(t, h, d)
        if scale != 1.0:
            y = mx.concatenate([y[..., :rotary_dims] * scale, y[..., rotary_dims:]], axis=-1)
        return y
    return _C.rope(x, positions, inv_freq, rotary_dims, bool(traditional), float(scale))


def gated_act(gate: mx.array, up: mx.array, act: str) -> mx.array:
    """``act(gate) * up`` elementwise: ``silu`` (SwiGLU), ``gelu_tanh`` or ``gelu`` (GeGLU)."""
    if _on_gpu():
        import math

        if act == "silu":
            return gate * mx.sigmoid(gate) * up
        if act == "gelu_tanh":
            return 0.5 * gate * (1 + mx.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate**3))) * up
        return 0.5 * gate * (1 + mx.erf(gate / math.sqrt(2))) * up
    return _C.gated_act(gate, up, act)
