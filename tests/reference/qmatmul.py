"""NumPy reference for tinyfast's qmatmul: y = x @ W.T with 8-bit quantized activations.

The kernels (csrc/cpu/qmatmul*.cpp) quantize each row of x in blocks of 32
elements (256 for q4_k / q6_k):

    amax = max |x_i|;  d = amax / 127;  a_i = clip(rint(x_i * (127 / amax)), -127, 127)

(blocks with amax < 1e-30 are all zero), in float32 with round-half-even. The
functions here reproduce that bit for bit, so ``x_tilde = d * a`` is exactly
the activation the integer dot products see, and

    y_q = x_tilde @ W.T                     (exact, computed in float64)

differs from the kernel output only by float32 rounding. Bound on that
rounding (``fp_bound``): every output is an fp32 sum, over at most
nt = K/32 + 16 terms, of exact int32 block dot products times fp32 scale
products (each term carries <= 4 roundings; the sum adds one per term plus
the 8-lane reduction). Standard error analysis gives

    |y_kernel - y_q| <= gamma(nt) * sum_k Wabs[n, k] * |x_tilde[m, k]|,  gamma(n) = n u / (1 - n u), u = 2^-24

where Wabs is the magnitude of the terms the kernel adds before they cancel:
|W| for formats whose offsets are folded in integers (q4_0, q5_0, q8_0,
q6_k), |d*sc*q| + |dmin*m| for q4_k (scale and min terms are separate),
|scale|*(q + 256) + |bias| for affine (bias and scale terms separate, the
affine8 AVX2 kernel also moves 128*scale between them). Rounding the result
to float16 / bfloat16 adds at most half an ulp: 2^-11 / 2^-8 relative (plus
2^-25 absolute for float16 subnormals).

Separately, activation quantization moves y by at most
``quant_bound = sum_blocks (d/2) * sum_{k in block} |W[n, k]|`` from the exact
x @ W.T (|x - x_tilde| <= d/2 per element), which the tests check of the
mirror itself.
"""

from __future__ import annotations

import numpy as np

from . import quant as ref

ACT_BLOCK = {"q4_0": 32, "q5_0": 32, "q8_0": 32, "q4_k": 256, "q6_k": 256, "affine4": 32, "affine8": 32}
TINY_AMAX = np.float32(1e-30)
U32 = 2.0 ** -24


def quantize_activations(x: np.ndarray, block: int):
    """x float32 [M, K] -> (codes int8 [M, K], scales float32 [M, K/block]) as the kernels compute them."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    m, k = x.shape
    xb = x.reshape(m, k // block, block)
    amax = np.abs(xb).max(axis=2)
    zero = ~(amax >= TINY_AMAX)
    safe = np.where(zero, np.float32(1), amax)
    d = np.where(zero, np.float32(0), safe / np.float32(127)).astype(np.float32)
    inv = np.where(zero, np.float32(0), np.float32(127) / safe).astype(np.float32)
    q = np.clip(np.rint(xb * inv[:, :, None]), -127, 127).astype(np.int8)
    return q.reshape(m, k), d


def dequantized_activations(x: np.ndarray, block: int) -> np.ndarray:
    q, d = quantize_activations(x, block)
    m, k = q.shape
    return (q.reshape(m, k // block, block).astype(np.float64) * d[:, :, None]).reshape(m, k)


# ----------------------------------------------------------- weight terms

def _q4_k_terms(raw: np.ndarray, shape) -> np.ndarray:
    n, k = shape
    b = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, 144)
    d = b[:, 0:2].copy().view("<f2").astype(np.float64)
    dmin = b[:, 2:4].copy().view("<f2").astype(np.float64)
    sc, mn = ref.unpack_q4_k_scales(b[:, 4:16])
    qs = b[:, 16:144].reshape(-1, 4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float64)
    scale_term = np.abs(d[:, :, None] * sc[:, :, None] * q)
    min_term = np.abs(dmin[:, :, None] * mn[:, :, None]) * np.ones_like(q)
    return (scale_term + min_term).reshape(n, k)


def weight_magnitudes(fmt: str, w_float: np.ndarray, raw=None, affine=None) -> np.ndarray:
    """Wabs [N, K] (see module docstring). raw: GGUF bytes; affine: (codes, scales, biases, bits, group_size)."""
    if fmt == "q4_k":
        return _q4_k_terms(raw, w_float.shape)
    if fmt in ("affine4", "affine8"):
        codes, scales, biases, bits, gs = affine
        q = ref.affine_unpack(np.asarray(codes), bits).astype(np.float64)
        s = np.repeat(np.asarray(scales, dtype=np.float64), gs, axis=1)
        b = np.repeat(np.asarray(biases, dtype=np.float64), gs, axis=1)
        return np.abs(s) * (q + 256) + np.abs(b)
    return np.abs(w_float.astype(np.float64))


def expected(x: np.ndarray, w_float: np.ndarray, wabs: np.ndarray, fmt: str, out_dtype=np.float32):
    """(y_q, tol): the value the kernel approximates and the derived bound on |kernel - y_q|."""
    block = ACT_BLOCK[fmt]
    xt = dequantized_activations(x, block)
    y_q = xt @ w_float.astype(np.float64).T
    k = w_float.shape[1]
    nt = k // 32 + 16
    gamma = nt * U32 / (1 - nt * U32)
    tol = gamma * (np.abs(xt) @ wabs.T)
    if out_dtype == np.float16:
        tol = tol + (np.abs(y_q) + tol) * 2.0 ** -11 + 2.0 ** -25
    elif out_dtype == "bfloat16":
        tol = tol + (np.abs(y_q) + tol) * 2.0 ** -8
    return y_q, tol


def quant_bound(x: np.ndarray, w_float: np.ndarray, fmt: str) -> np.ndarray:
    """A-priori bound on |x_tilde @ W.T - x @ W.T| from activation rounding."""
    block = ACT_BLOCK[fmt]
    _, d = quantize_activations(x, block)
    m, k = x.shape
    wb = np.abs(w_float.astype(np.float64)).reshape(w_float.shape[0], k // block, block).sum(axis=2)
    return (d.astype(np.float64) / 2) @ wb.T * (1 + 1e-6)


# ------------------------------------------------ activation byte layouts
# The exact bytes qmatmul's kernels read (csrc/cpu/qmatmul_internal.h).

def _round64(v: int) -> int:
    return (v + 63) // 64 * 64


def affine4_positions(k: int) -> np.ndarray:
    """pos[e]: where element e of a row sits in affine4's even/odd-split code layout."""
    e = np.arange(k)
    c, t = e // 64, e % 64
    full = (c + 1) * 64 <= k
    half = np.where(full, 32, 16)
    return c * 64 + np.where(t % 2 == 1, half, 0) + t // 2


def pack_activations(x: np.ndarray, fmt: str, group_size: int = 0) -> np.ndarray:
    """x float32 [M, K] -> uint8 [M, row_stride] in the layout of `fmt`."""
    block = ACT_BLOCK[fmt]
    q, d = quantize_activations(x, block)
    m, k = q.shape
    sums16 = q.reshape(m, k // 16, 16).astype(np.int32).sum(axis=2)
    rows = []
    for r in range(m):
        if fmt in ("q4_0", "q5_0", "q8_0"):
            out = bytearray()
            for b in range(k // 32):
                out += np.float32(d[r, b]).tobytes()
                out += np.int32(sums16[r, 2 * b] + sums16[r, 2 * b + 1]).tobytes()
                out += q[r, 32 * b:32 * b + 32].tobytes()
            row = np.frombuffer(bytes(out), np.uint8)
            stride = _round64(k // 32 * 40)
        elif fmt in ("q4_k", "q6_k"):
            out = bytearray()
            for b in range(k // 256):
                out += np.float32(d[r, b]).tobytes()
                out += q[r, 256 * b:256 * b + 256].tobytes()
                out += sums16[r, 16 * b:16 * b + 16].astype("<i2").tobytes()
            row = np.frombuffer(bytes(out), np.uint8)
            stride = _round64(k // 256 * 292)
        else:
            nb, nc, ng = k // 32, (k + 63) // 64, k // group_size
            off_d = _round64(k)
            off_qsum = off_d + _round64(nb * 4)
            off_gsum = off_qsum + _round64(nb * 4)
            off_dl = off_gsum + _round64(ng * 4)
            stride = off_dl + _round64(nc * 32)
            buf = np.zeros(stride, np.uint8)
            codes = np.empty(k, np.int8)
            if fmt == "affine4":
                codes[affine4_positions(k)] = q[r]
            else:
                codes[:] = q[r]
            buf[:k] = codes.view(np.uint8)
            qsum = (sums16[r, 0::2] + sums16[r, 1::2]).astype(np.int32)
            buf[off_d:off_d + 4 * nb] = d[r].astype("<f4").view(np.uint8)
            buf[off_qsum:off_qsum + 4 * nb] = qsum.astype("<i4").view(np.uint8)
            per = group_size // 32
            gsum = np.zeros(ng, np.float32)
            for g in range(ng):                       # block order, fp32, like the C++
                s = np.float32(0)
                for b in range(g * per, (g + 1) * per):
                    s = np.float32(s + np.float32(d[r, b] * np.float32(qsum[b])))
                gsum[g] = s
            buf[off_gsum:off_gsum + 4 * ng] = gsum.view(np.uint8)
            dl = np.zeros((nc, 8), np.float32)
            for b in range(nb):
                dl[b // 2, 4 * (b % 2):4 * (b % 2) + 4] = d[r, b]
            buf[off_dl:off_dl + 32 * nc] = dl.reshape(-1).view(np.uint8)
            rows.append(buf)
            continue
        buf = np.zeros(stride, np.uint8)
        buf[:row.size] = row
        rows.append(buf)
    return np.stack(rows)


# ---------------------------------------------------------- test weights

_F16_FIELDS = {"q4_0": [0], "q8_0": [0], "q5_0": [0], "q4_k": [0, 2], "q6_k": [208]}


def random_gguf_blocks(fmt: str, n: int, k: int, rng) -> np.ndarray:
    """Uniformly random codes/scales bytes (every code value occurs) with finite
    fp16 scale fields, some subnormal. uint8 [n, row_bytes]."""
    qk, nb = ref.BLOCK[fmt]
    raw = rng.integers(0, 256, (n * (k // qk), nb), dtype=np.uint8)
    for off in _F16_FIELDS[fmt]:
        d = (rng.standard_normal(raw.shape[0]) * 0.02).astype("<f2")
        d[::7] = (rng.standard_normal(len(d[::7])) * 1e-6).astype("<f2")
        raw[:, off:off + 2] = d.reshape(-1, 1).view(np.uint8)
    return raw.reshape(n, -1)


def random_float_weight(n: int, k: int, rng) -> np.ndarray:
    """Normal rows with per-row scale spread and a few outliers, like real weights."""
    w = rng.standard_normal((n, k)) * np.exp(rng.uniform(-3, 0, (n, 1)))
    w[rng.random((n, k)) < 0.002] *= 8
    return w.astype(np.float32)


def make_weight(fmt: str, n: int, k: int, rng, kind: str = "quantized", group_size: int = 64):
    """Test weight as a dict: fmt, shape, raw (GGUF uint8 [n, row_bytes]) or
    affine (codes, scales, biases, bits, group_size) with float16 scales,
    w (float32 dequantized, bit-exact), wabs (see weight_magnitudes)."""
    if fmt in ref.BLOCK:
        raw = random_gguf_blocks(fmt, n, k, rng) if kind == "random" else ref.quantize(random_float_weight(n, k, rng), fmt)
        w = ref.dequantize(raw, fmt, (n, k))
        return {"fmt": fmt, "shape": (n, k), "raw": raw, "w": w,
                "wabs": weight_magnitudes(fmt, w, raw=raw)}
    bits = int(fmt[-1])
    if kind == "random":
        codes = rng.integers(0, 2 ** 32, (n, k * bits // 32), dtype=np.uint64).astype(np.uint32)
        scales = (rng.standard_normal((n, k // group_size)) * 0.01).astype(np.float16)
        biases = (rng.standard_normal((n, k // group_size)) * 0.1).astype(np.float16)
    else:
        codes, scales, biases = ref.affine_quantize(random_float_weight(n, k, rng).astype(np.float16), bits, group_size)
    return affine_weight(fmt, codes, scales, biases, group_size)


def affine_weight(fmt, codes, scales, biases, group_size):
    """Test-weight dict for an affine triple; scales/biases any float dtype NumPy can cast to float32."""
    bits = int(fmt[-1])
    s32 = np.asarray(scales, dtype=np.float32)
    b32 = np.asarray(biases, dtype=np.float32)
    w = ref.affine_dequantize(codes, s32, b32, bits, group_size).astype(np.float32)
    aff = (codes, scales, biases, bits, group_size)
    return {"fmt": fmt, "shape": w.shape, "affine": aff, "w": w,
            "wabs": weight_magnitudes(fmt, w, affine=(codes, s32, b32, bits, group_size))}


def random_activations(m: int, k: int, rng) -> np.ndarray:
    """Rows with block-to-block scale changes, an all-zero block, a tiny block and outliers."""
    x = rng.standard_normal((m, k)) * np.exp(rng.uniform(-2, 1, (m, k // 32, 1))).repeat(32, axis=2).reshape(m, k)
    x[:, :32] = 0.0
    if k >= 96:
        x[:, 64:96] *= 1e-33
    x[rng.random((m, k)) < 0.01] *= 20
    return x.astype(np.float32)
