#pragma once
// Shared between the qmatmul driver (qmatmul.cpp) and the per-ISA kernel files
// (qmatmul_scalar.cpp, qmatmul_avx2.cpp, qmatmul_avx512.cpp, qmatmul_neon*.cpp). Not part of the
// public interface.
#include <cstdint>
#include <cstring>

#include "core/quant_blocks.h"
#include "cpu/qmatmul.h"

namespace tinyfast::cpu::qk {

using quant::block_q4_0;
using quant::block_q4_K;
using quant::block_q5_0;
using quant::block_q6_K;
using quant::block_q8_0;
using quant::block_q8_0a;
using quant::block_q8_K;

// ---------------------------------------------------------------- activations
// One quantized activation row, per weight family:
//   Q4_0/Q5_0/Q8_0: k/32 block_q8_0a (d, qsum, 32 codes).
//   Q4_K/Q6_K:      k/256 block_q8_K (d, 256 codes, sums of each 16).
//   affine:         AffineActs below.
// Rows are padded to 64 bytes (cache-line aligned when the buffer is); the
// kernels use unaligned loads, so nothing depends on the buffer's alignment.

// Affine activations: codes per 32-element block with fp32 scale d[b] and code
// sum qsum[b]; gsum[g] = sum over the blocks b of group g of d[b]*qsum[b] (the
// quantized activation sum that multiplies the group's bias), accumulated in
// block order in fp32.
//
// affine4 codes are stored even/odd split per 64 elements: byte j of the
// weight row holds elements 2j (low nibble) and 2j+1 (high nibble), so for a
// 64-element chunk the 32 low nibbles meet qs[0..31] = x[0], x[2], ..., x[62]
// and the high nibbles meet qs[32..63] = x[1], ..., x[63] with no shuffles.
// A trailing 32-element chunk (k % 64 == 32) is split 16/16 the same way.
// dl[c] holds the 8 fp32 lane scales of chunk c as the AVX2 kernel's madd
// lanes see them: lanes 0-3 cover block 2c, lanes 4-7 block 2c+1 (the NEON
// kernels read d instead: their 16-byte halves already map to whole blocks).
struct AffineActs {
  int64_t k = 0;
  int group_size = 0;
  int64_t off_d = 0, off_qsum = 0, off_gsum = 0, off_dl = 0, row_bytes = 0;

  AffineActs(int64_t k_, int group_size_) : k(k_), group_size(group_size_) {
    const int64_t nb = k / 32, nc = (k + 63) / 64;
    off_d = round64(k);
    off_qsum = off_d + round64(nb * 4);
    off_gsum = off_qsum + round64(nb * 4);
    off_dl = off_gsum + round64(k / group_size * 4);
    row_bytes = off_dl + round64(nc * 32);
  }
  static int64_t round64(int64_t v) { return (v + 63) / 64 * 64; }
};

// Position of element e of a row inside affine4's even/odd-split code layout.
inline int64_t affine4_pos(int64_t e, int64_t k) {
  const int64_t c = e / 64, t = e % 64;
  const bool full = (c + 1) * 64 <= k;
  const int64_t half = full ? 32 : 16;
  return c * 64 + (t % 2 ? half : 0) + t / 2;
}

inline int64_t act_row_stride(QType t, int64_t k, int group_size) {
  switch (t) {
    case QType::Q4_0:
    case QType::Q5_0:
    case QType::Q8_0:
      return AffineActs::round64(k / 32 * static_cast<int64_t>(sizeof(block_q8_0a)));
    case QType::Q4_K:
    case QType::Q6_K:
      return AffineActs::round64(k / 256 * static_cast<int64_t>(sizeof(block_q8_K)));
    case QType::Affine4:
    case QType::Affine8:
      return AffineActs(k, group_size).row_bytes;
  }
  return 0;
}

// Blocks whose amax is below this are stored as zero: 127/amax would overflow.
constexpr float kTinyAmax = 1e-30f;

// ------------------------------------------------------------ kernel tables
// res[i * nn + j] = y[m0 + i, n0 + j] for i < mm (1..IsaKernels::tile_m[type]), j < nn;
// acts points at activation row m0, consecutive rows act_stride bytes apart.
constexpr int kMaxTileM = 8;  // the largest tile_m of any level
using TileFn = void (*)(const QWeightView& w, const uint8_t* acts, int64_t act_stride, int64_t n0, int nn, int mm,
                        float* res);

struct IsaKernels {
  KernelLevel level;
  // One row of x (k elements of type t) to fp32.
  void (*to_f32)(const void* x, FType t, int64_t k, float* out);
  // fp32 row -> int8 codes, one fp32 scale per `block` (32 or 256) elements and
  // the sum of every 16 codes. Must agree bit for bit across ISAs.
  void (*quantize_row)(const float* x, int64_t k, int block, int8_t* qs, float* d, int16_t* sums16);
  TileFn tile[kNumQTypes];
  // Rows of x per tile call, per type (<= kMaxTileM): each weight block is
  // unpacked once per tile_m rows, so a kernel with registers to spare takes more.
  int tile_m[kNumQTypes] = {4, 4, 4, 4, 4, 4, 4};
};

const IsaKernels& scalar_kernels();
const IsaKernels* avx2_kernels();          // nullptr when not built for x86-64
const IsaKernels* avx512_kernels();        // nullptr unless built for x86-64 with AVX-512 VNNI flags
const IsaKernels* neon_kernels();          // nullptr when not built for arm64
const IsaKernels* neon_dotprod_kernels();  // nullptr unless built for arm64 with +dotprod

// Scalar helpers shared by kernels of every ISA.
inline float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, NaN stays NaN: what MLX's bfloat16 conversion does.
inline uint16_t fp32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float load_scale(const void* p, FType t, int64_t i) {
  switch (t) {
    case FType::F32:
      return static_cast<const float*>(p)[i];
    case FType::F16:
      return quant::fp16_to_fp32(static_cast<const uint16_t*>(p)[i]);
    case FType::BF16:
      return bf16_to_fp32(static_cast<const uint16_t*>(p)[i]);
  }
  return 0.0f;
}

// Q4_K's 12 scale bytes -> 8 six-bit scales and 8 six-bit mins (see quant_blocks.h),
// four at a time as 32-bit words: bytes 0-3 hold sc[0..3] in their low 6 bits
// and bits 4-5 of sc[4..7] in their top 2 bits; bytes 4-7 the same for m;
// bytes 8-11 hold the low nibbles of sc[4..7] (low) and m[4..7] (high).
inline void unpack_q4_k_scales(const uint8_t* s, uint8_t sc[8], uint8_t m[8]) {
  uint32_t w0, w1, w2;
  std::memcpy(&w0, s, 4);
  std::memcpy(&w1, s + 4, 4);
  std::memcpy(&w2, s + 8, 4);
  const uint32_t sc_lo = w0 & 0x3f3f3f3fu;
  const uint32_t m_lo = w1 & 0x3f3f3f3fu;
  const uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);
  const uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(m, &m_lo, 4);
  std::memcpy(m + 4, &m_hi, 4);
}

}  // namespace tinyfast::cpu::qk
