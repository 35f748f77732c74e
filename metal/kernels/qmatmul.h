// Quantized matrix-vector product for the GGUF block formats:
// y[m, n] = sum_k x[m, k] * W[n, k], W rows of Q4_0 / Q5_0 / Q8_0 / Q4_K / Q6_K
// blocks (byte layouts: csrc/core/quant_blocks.h, reference:
// tests/reference/quant.py).
//
// Each simdgroup computes kQMatvecRows output rows for one row of x; its lanes
// split the row into 32-element chunks (a legacy block, or a sub-block of a
// K-quant super-block), lane j taking chunks j, j + 32, ... For each chunk a
// lane loads x once, dequantizes the chunk of every one of its rows in
// registers and accumulates the dot product; simd_sum combines the lanes.
//
// Unlike the CPU kernels, x is not quantized to 8 bits: this is the float dot
// product of x with the dequantized weight (as ggml's Metal mat-vec kernels
// do), so results differ from the CPU op by the activation rounding the CPU
// reference documents (tests/reference/qmatmul.py, quant_bound).
//
// Blocks are only 2-byte aligned inside a GGUF row, so the widest safe load is
// 16 bits; quants are read as ushort words (two bytes at a time).
#pragma once

#include "kernels/defines.h"
#include "kernels/params.h"

namespace tf {

inline float load_f16(const device uchar* p) {
  return static_cast<float>(as_type<half>(*reinterpret_cast<const device ushort*>(p)));
}

// w[0:32] = elements 32 c .. 32 c + 31 of a weight row. The float operation
// order is the reference's: d * (q - offset) for the legacy formats,
// (d * sc) * q - dmin * m for Q4_K, (d * sc) * q for Q6_K.
template <int Fmt>
inline void dequant_chunk(const device uchar* row, int c, thread float (&w)[32]);

template <>
inline void dequant_chunk<kQ4_0>(const device uchar* row, int c, thread float (&w)[32]) {
  const device uchar* b = row + c * 18;
  const float d = load_f16(b);
  const device ushort* qs = reinterpret_cast<const device ushort*>(b + 2);
  for (int i = 0; i < 8; ++i) {
    const ushort q = qs[i];  // bytes 2i, 2i + 1: elements 2i, 2i+1 (low) and 2i+16, 2i+17 (high)
    w[2 * i] = d * static_cast<float>(static_cast<int>(q & 15) - 8);
    w[2 * i + 1] = d * static_cast<float>(static_cast<int>((q >> 8) & 15) - 8);
    w[2 * i + 16] = d * static_cast<float>(static_cast<int>((q >> 4) & 15) - 8);
    w[2 * i + 17] = d * static_cast<float>(static_cast<int>((q >> 12) & 15) - 8);
  }
}

template <>
inline void dequant_chunk<kQ5_0>(const device uchar* row, int c, thread float (&w)[32]) {
  const device uchar* b = row + c * 22;
  const float d = load_f16(b);
  const device ushort* h16 = reinterpret_cast<const device ushort*>(b + 2);
  const uint qh = static_cast<uint>(h16[0]) | (static_cast<uint>(h16[1]) << 16);
  const device ushort* qs = reinterpret_cast<const device ushort*>(b + 6);
  for (int i = 0; i < 8; ++i) {
    const ushort q = qs[i];
    const int e0 = 2 * i, e1 = 2 * i + 1, e2 = 2 * i + 16, e3 = 2 * i + 17;
    w[e0] = d * static_cast<float>(static_cast<int>((q & 15) | (((qh >> e0) & 1) << 4)) - 16);
    w[e1] = d * static_cast<float>(static_cast<int>(((q >> 8) & 15) | (((qh >> e1) & 1) << 4)) - 16);
    w[e2] = d * static_cast<float>(static_cast<int>(((q >> 4) & 15) | (((qh >> e2) & 1) << 4)) - 16);
    w[e3] = d * static_cast<float>(static_cast<int>(((q >> 12) & 15) | (((qh >> e3) & 1) << 4)) - 16);
  }
}

template <>
inline void dequant_chunk<kQ8_0>(const device uchar* row, int c, thread float (&w)[32]) {
  const device uchar* b = row + c * 34;
  const float d = load_f16(b);
  const device ushort* qs = reinterpret_cast<const device ushort*>(b + 2);
  for (int i = 0; i < 16; ++i) {
    const ushort q = qs[i];
    w[2 * i] = d * static_cast<float>(static_cast<char>(q & 0xff));
    w[2 * i + 1] = d * static_cast<float>(static_cast<char>(q >> 8));
  }
}

template <>
inline void dequant_chunk<kQ4_K>(const device uchar* row, int c, thread float (&w)[32]) {
  const device uchar* b = row + (c / 8) * 144;
  const int j = c % 8;  // sub-block
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const device uchar* sc = b + 4;
  int s, m;
  if (j < 4) {
    s = sc[j] & 63;
    m = sc[j + 4] & 63;
  } else {
    s = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
    m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
  }
  const float ds = d * static_cast<float>(s), dm = dmin * static_cast<float>(m);
  // 32-byte chunk j / 2 of qs: low nibbles are sub-block 2i, high ones 2i + 1.
  const device ushort* qs = reinterpret_cast<const device ushort*>(b + 16 + 32 * (j / 2));
  const int shift = (j % 2) * 4;
  for (int i = 0; i < 16; ++i) {
    const ushort q = qs[i];
    w[2 * i] = ds * static_cast<float>((q >> shift) & 15) - dm;
    w[2 * i + 1] = ds * static_cast<float>((q >> (8 + shift)) & 15) - dm;
  }
}

template <>
inline void dequant_chunk<kQ6_K>(const device uchar* row, int c, thread float (&w)[32]) {
  const device uchar* b = row + (c / 8) * 210;
  const int e0 = (c % 8) * 32;  // first element of the chunk in the block
  const int half_ = e0 / 128, t = e0 % 128;  // t: 0, 32, 64 or 96 within the half
  const device ushort* ql = reinterpret_cast<const device ushort*>(b + 64 * half_ + (t % 64));
  const device ushort* qh = reinterpret_cast<const device ushort*>(b + 128 + 32 * half_);
  const int lo_shift = t >= 64 ? 4 : 0, hi_shift = 2 * (t / 32);
  const float d = load_f16(b + 208);
  const device char* scales = reinterpret_cast<const device char*>(b + 192);
  const float ds0 = d * static_cast<float>(scales[e0 / 16]), ds1 = d * static_cast<float>(scales[e0 / 16 + 1]);
  for (int i = 0; i < 16; ++i) {
    const ushort l2 = ql[i], h2 = qh[i];
    const int q0 = static_cast<int>(((l2 >> lo_shift) & 15) | (((h2 >> hi_shift) & 3) << 4)) - 32;
    const int q1 = static_cast<int>(((l2 >> (8 + lo_shift)) & 15) | (((h2 >> (8 + hi_shift)) & 3) << 4)) - 32;
    const float ds = i < 8 ? ds0 : ds1;  // elements 2i, 2i + 1 < 16 use the first scale
    w[2 * i] = ds * static_cast<float>(q0);
    w[2 * i + 1] = ds * static_cast<float>(q1);
  }
}

template <typename T, int Fmt>
inline void qmatmul_impl(const device T* x, const device uchar* w, device T* y, constant QMatvecParams& p,
                         uint3 tgid, uint lane, uint sg) {
  const int m = static_cast<int>(tgid.y);
  const int n0 = (static_cast<int>(tgid.x) * kQMatvecSimdgroups + static_cast<int>(sg)) * kQMatvecRows;
  if (n0 >= p.n) return;  // uniform per simdgroup
  const int chunks = p.k / 32;
  const device T* xr = x + static_cast<long>(m) * p.k;
  float sum[kQMatvecRows];
  for (int r = 0; r < kQMatvecRows; ++r) sum[r] = 0.0f;
  for (int c = static_cast<int>(lane); c < chunks; c += kSimd) {
    float xv[32];
    for (int i = 0; i < 32; ++i) xv[i] = to_float(xr[c * 32 + i]);
    for (int r = 0; r < kQMatvecRows; ++r) {
      if (n0 + r >= p.n) break;
      float wv[32];
      dequant_chunk<Fmt>(w + static_cast<long>(n0 + r) * p.row_bytes, c, wv);
      float acc = 0.0f;
      for (int i = 0; i < 32; ++i) acc += xv[i] * wv[i];
      sum[r] += acc;
    }
  }
  for (int r = 0; r < kQMatvecRows; ++r) {
    if (n0 + r >= p.n) break;  // uniform
    const float total = simd_sum(sum[r]);
    if (lane == 0) y[static_cast<long>(m) * p.n + n0 + r] = from_float<T>(total);
  }
}

}  // namespace tf
