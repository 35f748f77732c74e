"""Pure-NumPy reference (de)quantizers that the C++/Metal kernels are tested against.

GGUF formats: "q4_0", "q8_0", "q5_0", "q4_k", "q6_k".  Layouts follow the
published GGML block formats (see csrc/core/quant_blocks.h for the byte map).
Dequantization does its float32 arithmetic in the same order as the canonical
GGML code ((d*sc)*q - dmin*m), so results are bit-identical, not just close.

MLX affine: the (wq, scales, biases) triple produced by ``mx.quantize``.
"""

from __future__ import annotations

import numpy as np

QK_K = 256

# fmt -> (elements per block, bytes per block)
BLOCK = {
    "q4_0": (32, 18),
    "q8_0": (32, 34),
    "q5_0": (32, 22),
    "q4_k": (QK_K, 144),
    "q6_k": (QK_K, 210),
}


def row_bytes(fmt: str, k: int) -> int:
    qk, nb = BLOCK[fmt]
    if k % qk:
        raise ValueError(f"{fmt}: row length {k} is not a multiple of {qk}")
    return k // qk * nb


def _blocks(raw: np.ndarray, fmt: str, shape) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    qk, nb = BLOCK[fmt]
    n = int(np.prod(shape))
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if shape[-1] % qk or raw.size != n // qk * nb:
        raise ValueError(f"{fmt}: {raw.size} bytes do not hold shape {shape}")
    return raw.reshape(-1, nb)


def _f16(b: np.ndarray) -> np.ndarray:
    """Two little-endian bytes per row -> float32 (exact)."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


# ---------------------------------------------------------------- dequantize


def _deq_q4_0(b):
    d = _f16(b[:, 0:2])
    qs = b[:, 2:18]
    # low nibbles are elements 0..15, high nibbles 16..31
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def _deq_q8_0(b):
    d = _f16(b[:, 0:2])
    return d * b[:, 2:34].view(np.int8).astype(np.float32)


def _deq_q5_0(b):
    d = _f16(b[:, 0:2])
    qh = np.ascontiguousarray(b[:, 2:6]).view("<u4")  # (n, 1)
    hi = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    qs = b[:, 6:22]
    lo = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    q = (lo | (hi << 4)).astype(np.int8) - np.int8(16)
    return d * q.astype(np.float32)


def unpack_q4_k_scales(scales: np.ndarray):
    """(n, 12) packed bytes -> (sc, m), each (n, 8) uint8 in [0, 63].

    Bytes 0-3 hold sc[0:4] in their low 6 bits, bytes 4-7 hold m[0:4]; the
    top 2 bits of bytes 0-3 / 4-7 are bits 4-5 of sc[4:8] / m[4:8], whose low
    nibbles sit in bytes 8-11 (sc low, m high)."""
    a, b, c = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([a & 63, (c & 0x0F) | ((a >> 6) << 4)], axis=1)
    m = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, m


def pack_q4_k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    sc = sc.astype(np.uint8)
    m = m.astype(np.uint8)
    a = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    b = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    c = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    return np.concatenate([a, b, c], axis=1)


def _deq_q4_k(b):
    n = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, m = unpack_q4_k_scales(b[:, 4:16])
    qs = b[:, 16:144].reshape(n, 4, 1, 32)
    # chunk i of 32 bytes: low nibbles -> sub-block 2i, high -> 2i+1
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)
    ds = (d * sc.astype(np.float32))[:, :, None]
    dm = (dmin * m.astype(np.float32))[:, :, None]
    return (ds * q.astype(np.float32) - dm).reshape(n, QK_K)


_Q6_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)


def _deq_q6_k(b):
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 1, 2, 32)  # half, -, first/second 32 bytes, l
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(b[:, 208:210])
    # within a 128-half, group g = 2*nibble + which-32-bytes; qh bits 2g..2g+1
    lo = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, 2, 4, 32)
    hi = (qh >> _Q6_SHIFTS[None, None, :, None]) & 3
    q = (lo | (hi << 4)).astype(np.int8) - np.int8(32)
    ds = (d * sc)[:, :, None]
    return (ds * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


_DEQ = {"q4_0": _deq_q4_0, "q8_0": _deq_q8_0, "q5_0": _deq_q5_0,
        "q4_k": _deq_q4_k, "q6_k": _deq_q6_k}


def dequantize(raw: np.ndarray, fmt: str, shape) -> np.ndarray:
    """Raw GGUF bytes of a row-major tensor of `shape` -> float32 array."""
    fmt = fmt.lower()
    return _DEQ[fmt](_blocks(raw, fmt, shape)).reshape(tuple(int(s) for s in shape))


def qmatmul_reference(x: np.ndarray, raw: np.ndarray, fmt: str, shape) -> np.ndarray:
    """y = x @ W.T for W[N, K] stored as GGUF rows; float64 accumulate, float32 out."""
    w = dequantize(raw, fmt, shape).astype(np.float64)
    return (np.asarray(x, dtype=np.float64) @ w.T).astype(np.float32)


# ------------------------------------------------------------------ quantize
# Test-data generators: they only need to emit valid blocks with small error.


def _to_f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def _f16_ceil(x):
    """Smallest fp16 >= x (x >= 0), so a scale never shrinks when stored and
    the integer codes derived from it cannot overflow their bit width."""
    h = _to_f16(x)
    low = h.astype(np.float64) < np.asarray(x, dtype=np.float64)
    return np.where(low, np.nextafter(h, np.float16(np.inf)), h)


def _f16_bytes(h):
    return np.ascontiguousarray(h.astype("<f2").reshape(-1, 1)).view(np.uint8)


def _safe_div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1), 0.0)


def _signed_absmax(x):
    """Per row, the element of largest magnitude with its sign: GGML's legacy
    formats map it to the most negative code, gaining one level of range."""
    idx = np.argmax(np.abs(x), axis=1)
    return x[np.arange(x.shape[0]), idx]


def _q_legacy(x, levels):  # q4_0 (levels=16) / q5_0 (levels=32)
    half = levels // 2
    d = _to_f16(_signed_absmax(x) / -half)
    q = np.rint(_safe_div(x, d.astype(np.float64)[:, None])) + half
    return d, np.clip(q, 0, levels - 1).astype(np.uint8)


def _quant_q4_0(x):
    d, q = _q_legacy(x, 16)
    return np.concatenate([_f16_bytes(d), q[:, :16] | (q[:, 16:] << 4)], axis=1)


def _quant_q5_0(x):
    d, q = _q_legacy(x, 32)
    lo = q & 0x0F
    hbits = ((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    qh = np.bitwise_or.reduce(hbits, axis=1).astype("<u4").reshape(-1, 1)
    return np.concatenate([_f16_bytes(d), qh.view(np.uint8), lo[:, :16] | (lo[:, 16:] << 4)], axis=1)


def _quant_q8_0(x):
    d = _to_f16(np.abs(x).max(axis=1) / 127)
    q = np.clip(np.rint(_safe_div(x, d.astype(np.float64)[:, None])), -128, 127)
    return np.concatenate([_f16_bytes(d), q.astype(np.int8).view(np.uint8)], axis=1)


def _quant_q4_k(x):
    n = x.shape[0]
    xs = x.reshape(n, 8, 32)
    # Q4_K can only represent sub-block minima <= 0 (m is unsigned).
    lo = np.minimum(xs.min(axis=2), 0.0)
    hi = np.maximum(xs.max(axis=2), 0.0)
    dmin = _f16_ceil((-lo).max(axis=1) / 63).astype(np.float64)
    m = np.minimum(np.ceil(_safe_div(-lo, dmin[:, None])), 63)  # ceil: stored min <= true min
    base = -m * dmin[:, None]
    step = (hi - base) / 15
    d = _f16_ceil(step.max(axis=1) / 63).astype(np.float64)
    sc = np.minimum(np.ceil(_safe_div(step, d[:, None])), 63)  # ceil: top code stays <= 15
    real_step = sc * d[:, None]
    q = np.rint(_safe_div(xs - base[:, :, None], real_step[:, :, None]))
    q = np.clip(q, 0, 15).astype(np.uint8).reshape(n, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    return np.concatenate([_f16_bytes(_to_f16(d)), _f16_bytes(_to_f16(dmin)),
                           pack_q4_k_scales(sc, m), qs], axis=1)


def _quant_q6_k(x):
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    step = np.abs(xs).max(axis=2) / 31                    # symmetric, codes -31..31
    d = _f16_ceil(step.max(axis=1) / 127).astype(np.float64)
    sc = np.minimum(np.ceil(_safe_div(step, d[:, None])), 127)
    q = np.rint(_safe_div(xs, (sc * d[:, None])[:, :, None]))
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)
    # inverse of _deq_q6_k's grouping: g = 2*nibble + which-32-bytes
    ql = ((q[:, :, 0:2, :] & 0x0F) | (q[:, :, 2:4, :] << 4)).reshape(n, 128)
    qh = np.zeros((n, 2, 32), dtype=np.uint8)
    for g in range(4):
        qh |= (q[:, :, g, :] >> 4) << (2 * g)
    return np.concatenate([ql, qh.reshape(n, 64), sc.astype(np.int8).view(np.uint8),
                           _f16_bytes(_to_f16(d))], axis=1)


_QUANT = {"q4_0": _quant_q4_0, "q8_0": _quant_q8_0, "q5_0": _quant_q5_0,
          "q4_k": _quant_q4_k, "q6_k": _quant_q6_k}


def quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    """float array [..., K] -> raw GGUF bytes shaped [..., row_bytes(fmt, K)]."""
    fmt = fmt.lower()
    x = np.asarray(x, dtype=np.float32)
    qk, _ = BLOCK[fmt]
    nbytes = row_bytes(fmt, x.shape[-1])
    blocks = x.reshape(-1, qk).astype(np.float64)
    raw = _QUANT[fmt](blocks).astype(np.uint8)
    return np.ascontiguousarray(raw).reshape(x.shape[:-1] + (nbytes,))


# ---------------------------------------------------------------- MLX affine
# Facts (checked bit-for-bit against mx.quantize in test_references.py):
#  * groups are `group_size` consecutive elements along the last axis;
#  * 32//bits codes per uint32, element i of a word in bits [i*bits, (i+1)*bits)
#    (first element in the least significant bits);
#  * w ~= scale*q + bias with q in [0, 2^bits-1]; the group extreme of larger
#    magnitude is hit exactly (bias = that edge, scale may be negative).


def affine_quantize(w: np.ndarray, bits: int = 4, group_size: int = 64):
    """Mirror of MLX's CPU affine quantizer: float32 arithmetic, rint (ties to even)."""
    if bits not in (4, 8) or group_size not in (32, 64, 128):
        raise ValueError("bits must be 4/8 and group_size 32/64/128")
    w = np.asarray(w)
    out_dtype = w.dtype if w.dtype in (np.float16, np.float32) else np.float32
    if w.shape[-1] % group_size:
        raise ValueError("last dim must be a multiple of group_size")
    g = w.reshape(-1, group_size).astype(np.float32)
    n_bins = np.float32((1 << bits) - 1)
    eps = np.float32(1e-7)
    w_max, w_min = g.max(axis=1), g.min(axis=1)
    # anchor on the edge of larger magnitude so it is reproduced exactly
    mask = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, eps)
    scale = np.where(mask, scale, -scale)
    edge = np.where(mask, w_min, w_max)
    q0 = np.rint(edge / scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(q0 != 0, edge / q0, scale).astype(np.float32)
    bias = np.where(q0 != 0, edge, np.float32(0)).astype(np.float32)
    q = np.rint((g - bias[:, None]) / scale[:, None])
    q = np.clip(q, 0, n_bins).astype(np.uint32)
    per_word = 32 // bits
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)
    wq = np.bitwise_or.reduce(q.reshape(-1, per_word) << shifts, axis=1).astype(np.uint32)
    lead = w.shape[:-1]
    k = w.shape[-1]
    return (wq.reshape(lead + (k // per_word,)),
            scale.astype(out_dtype).reshape(lead + (k // group_size,)),
            bias.astype(out_dtype).reshape(lead + (k // group_size,)))


def affine_unpack(wq: np.ndarray, bits: int) -> np.ndarray:
    """uint32 words -> integer codes, last axis expanded 32//bits times."""
    per_word = 32 // bits
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    q = (np.asarray(wq, dtype=np.uint32)[..., None] >> shifts) & np.uint32((1 << bits) - 1)
    return q.reshape(wq.shape[:-1] + (wq.shape[-1] * per_word,))


def affine_dequantize(wq, scales, biases, bits: int = 4, group_size: int = 64) -> np.ndarray:
    """w = scale*q + bias per group, evaluated in the scales' dtype one op at a
    time (round after the multiply, then after the add) -- what MLX's CPU
    dequantize does, so fp16 results match it bit-for-bit, not just closely."""
    scales = np.asarray(scales)
    dt = scales.dtype
    q = affine_unpack(wq, bits).astype(dt)
    lead, k = q.shape[:-1], q.shape[-1]
    qg = q.reshape(lead + (k // group_size, group_size))
    w = scales[..., None] * qg + np.asarray(biases, dtype=dt)[..., None]
    return w.reshape(lead + (k,))
