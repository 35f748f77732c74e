// NEON qmatmul kernels, compiled once per instruction set: the including file
// defines TF_QMM_NEON_NS, TF_QMM_NEON_LEVEL and its own flags (qmatmul_neon.cpp: baseline
// armv8-a; qmatmul_neon_dotprod.cpp: -march=armv8.2-a+dotprod).
//
// Integer dot products go through dot16(): SDOT where the build has it,
// otherwise SMULL + ADDP + SADALP, which leave exactly the same int32 lane
// sums (lane i = products 4i..4i+3). One operand is always an activation code
// in [-127, 127], so |product| <= 128*127 and a pair fits int16 exactly. Both
// builds therefore apply the same fp32 operations to the same integers: their
// outputs are bit-identical (the cross tests check it).
//
// Activations use the layouts of qmatmul_internal.h unchanged: block_q8_0a and
// block_q8_K, and affine4's even/odd split, whose 16-byte halves are exactly
// what a 16-lane NEON register wants (low nibbles of code bytes 0-15 meet
// activation codes 0-15, their high nibbles codes 32-47, both block 2c).
//
// Every dot_<fmt><MT> computes MT activation rows against one weight row with
// the same operations for every MT (batch invariance, as in the AVX2 file).
//
// No standard-library templates (and no std:: inline functions) are
// instantiated here: the dotprod build's copies of them would be weak symbols
// the linker may hand to baseline callers, which then fault on CPUs without
// dotprod. Scratch comes from neon_scratch() in the baseline file instead.
#if !defined(TF_QMM_NEON_NS) || !defined(TF_QMM_NEON_LEVEL)
#error "define TF_QMM_NEON_NS and TF_QMM_NEON_LEVEL before including qmatmul_neon.h"
#endif

#include <arm_neon.h>

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk {
// Grow-only per-thread float buffer (defined in qmatmul_neon.cpp, baseline flags).
float* neon_scratch(int64_t count);
}  // namespace tinyfast::cpu::qk

namespace tinyfast::cpu::qk::TF_QMM_NEON_NS {
namespace {

// acc[i] += sum_{j<4} a[4i+j] * b[4i+j]
inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  const int16x8_t hi = vmull_high_s8(a, b);
  return vpadalq_s16(acc, vpaddq_s16(lo, hi));
#endif
}

inline int32x4_t dot32(int8x16_t w0, const int8_t* a0, int8x16_t w1, const int8_t* a1) {
  return dot16(dot16(vdupq_n_s32(0), w0, vld1q_s8(a0)), w1, vld1q_s8(a1));
}

inline float f16(uint16_t h) {
  __fp16 v;
  __builtin_memcpy(&v, &h, 2);
  return v;  // FCVT: exact, subnormals included
}

inline int8x16_t s8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }
inline float32x4_t cvt(int32x4_t v) { return vcvtq_f32_s32(v); }

inline const uint8_t* act_row(const uint8_t* acts, int64_t stride, int m) { return acts + m * stride; }

// ------------------------------------------------------------ Q4_0, Q5_0, Q8_0
// Codes are centred to int8 (q - c) so the signed dot needs no offset term.
// Blocks go in pairs whose two products are combined before one add into the
// accumulator, as in the AVX2 file (shorter fp dependency chain).

struct Q4_0Ops {
  using Block = block_q4_0;
  static void decode(const Block& b, int8x16_t q[2]) {  // elements 0-15 low nibbles, 16-31 high
    const uint8x16_t raw = vld1q_u8(b.qs);
    q[0] = vsubq_s8(s8(vandq_u8(raw, vdupq_n_u8(15))), vdupq_n_s8(8));
    q[1] = vsubq_s8(s8(vshrq_n_u8(raw, 4)), vdupq_n_s8(8));
  }
};

// 0xFF in byte j where bit 16*half + j of qh is set.
inline uint8x16_t q5_high_mask(uint32_t qh, int half) {
  static constexpr uint8_t kIdx[2][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                          {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3}};
  static constexpr uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t spread = vqtbl1q_u8(vreinterpretq_u8_u32(vdupq_n_u32(qh)), vld1q_u8(kIdx[half]));
  return vtstq_u8(spread, vld1q_u8(kBit));
}

struct Q5_0Ops {
  using Block = block_q5_0;
  static void decode(const Block& b, int8x16_t q[2]) {
    uint32_t qh;
    __builtin_memcpy(&qh, b.qh, 4);
    const uint8x16_t raw = vld1q_u8(b.qs), bit4 = vdupq_n_u8(16);
    const uint8x16_t lo = vorrq_u8(vandq_u8(raw, vdupq_n_u8(15)), vandq_u8(q5_high_mask(qh, 0), bit4));
    const uint8x16_t hi = vorrq_u8(vshrq_n_u8(raw, 4), vandq_u8(q5_high_mask(qh, 1), bit4));
    q[0] = vsubq_s8(s8(lo), vdupq_n_s8(16));
    q[1] = vsubq_s8(s8(hi), vdupq_n_s8(16));
  }
};

struct Q8_0Ops {
  using Block = block_q8_0;
  static void decode(const Block& b, int8x16_t q[2]) {
    q[0] = vld1q_s8(b.qs);
    q[1] = vld1q_s8(b.qs + 16);
  }
};

inline int32x4_t block_dot(const int8x16_t q[2], const block_q8_0a& a) { return dot32(q[0], a.qs, q[1], a.qs + 16); }

template <class Ops, int MT>
void dot_legacy(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const typename Ops::Block*>(wrow);
  float32x4_t acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = vdupq_n_f32(0.0f);
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    int8x16_t q0[2], q1[2];
    Ops::decode(w[b], q0);
    Ops::decode(w[b + 1], q1);
    const float d0 = f16(w[b].d), d1 = f16(w[b + 1].d);
    for (int m = 0; m < MT; ++m) {
      const auto* a = reinterpret_cast<const block_q8_0a*>(act_row(acts, stride, m)) + b;
      const float32x4_t v0 = vmulq_n_f32(cvt(block_dot(q0, a[0])), d0 * a[0].d);
      acc[m] = vaddq_f32(acc[m], vfmaq_n_f32(v0, cvt(block_dot(q1, a[1])), d1 * a[1].d));
    }
  }
  if (b < nb) {
    int8x16_t q0[2];
    Ops::decode(w[b], q0);
    const float d0 = f16(w[b].d);
    for (int m = 0; m < MT; ++m) {
      const auto* a = reinterpret_cast<const block_q8_0a*>(act_row(acts, stride, m)) + b;
      acc[m] = vfmaq_n_f32(acc[m], cvt(block_dot(q0, a[0])), d0 * a[0].d);
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = vaddvq_f32(acc[m]);
}

// ------------------------------------------------------------------ Q4_K
// Per super-block: d*da * sum_j sc_j (q_j . a_j)  -  dmin*da * sum_j m_j bsum32_j.
// The int32 sum is exact: |sc_j (q_j . a_j)| <= 63*15*127*32 per sub-block.

template <int MT>
void dot_q4_k(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const block_q4_K*>(wrow);
  float32x4_t acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = vdupq_n_f32(0.0f);
  const uint8x16_t nib = vdupq_n_u8(15);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t sc[8], mn[8];
    unpack_q4_k_scales(w[b].scales, sc, mn);
    const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
    const float d = f16(w[b].d), dmin = f16(w[b].dmin);
    int32x4_t isum[MT];
    for (int m = 0; m < MT; ++m) isum[m] = vdupq_n_s32(0);
    for (int c = 0; c < 4; ++c) {
      const uint8x16_t q0 = vld1q_u8(w[b].qs + 32 * c), q1 = vld1q_u8(w[b].qs + 32 * c + 16);
      const int8x16_t lo0 = s8(vandq_u8(q0, nib)), lo1 = s8(vandq_u8(q1, nib));  // sub-block 2c
      const int8x16_t hi0 = s8(vshrq_n_u8(q0, 4)), hi1 = s8(vshrq_n_u8(q1, 4));  // sub-block 2c+1
      for (int m = 0; m < MT; ++m) {
        const int8_t* aq = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b].qs + 64 * c;
        const int32x4_t p_lo = dot32(lo0, aq, lo1, aq + 16);
        const int32x4_t p_hi = dot32(hi0, aq + 32, hi1, aq + 48);
        isum[m] = vmlaq_n_s32(vmlaq_n_s32(isum[m], p_lo, sc[2 * c]), p_hi, sc[2 * c + 1]);
      }
    }
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
      // sums of 32 (|s| <= 32*127) are pairs of the sums of 16
      const int16x8_t bs32 = vpaddq_s16(vld1q_s16(a.bsums), vld1q_s16(a.bsums + 8));
      const int32x4_t mp = vmlal_high_s16(vmull_s16(vget_low_s16(mins), vget_low_s16(bs32)), mins, bs32);
      acc[m] = vfmaq_n_f32(acc[m], cvt(isum[m]), d * a.d);
      acc[m] = vfmsq_f32(acc[m], vdupq_n_f32(dmin * a.d), cvt(mp));
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = vaddvq_f32(acc[m]);
}

// ------------------------------------------------------------------ Q6_K
// Codes centred (q - 32 in int8); each dot16 covers exactly one 16-element
// sub-block, so its lanes are multiplied by that sub-block's scale in int32
// (exact: 16 sub-blocks * 4 * 32*127*128 < 2^31 per lane).

template <int MT>
void dot_q6_k(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const block_q6_K*>(wrow);
  float32x4_t acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = vdupq_n_f32(0.0f);
  const uint8x16_t nib = vdupq_n_u8(15), two = vdupq_n_u8(0x30);
  const int8x16_t off = vdupq_n_s8(32);
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16(w[b].d);
    int32x4_t isum[MT];
    for (int m = 0; m < MT; ++m) isum[m] = vdupq_n_s32(0);
    for (int h = 0; h < 2; ++h) {
      const int8_t* sc = w[b].scales + 8 * h;
      for (int part = 0; part < 2; ++part) {  // l in [16 part, 16 part + 16) of quant_blocks.h's table
        const uint8x16_t qa = vld1q_u8(w[b].ql + 64 * h + 16 * part);
        const uint8x16_t qb = vld1q_u8(w[b].ql + 64 * h + 32 + 16 * part);
        const uint8x16_t qh = vld1q_u8(w[b].qh + 32 * h + 16 * part);
        int8x16_t q[4];  // elements 32g + l of the half
        q[0] = vsubq_s8(s8(vorrq_u8(vandq_u8(qa, nib), vandq_u8(vshlq_n_u8(qh, 4), two))), off);
        q[1] = vsubq_s8(s8(vorrq_u8(vandq_u8(qb, nib), vandq_u8(vshlq_n_u8(qh, 2), two))), off);
        q[2] = vsubq_s8(s8(vorrq_u8(vshrq_n_u8(qa, 4), vandq_u8(qh, two))), off);
        q[3] = vsubq_s8(s8(vorrq_u8(vshrq_n_u8(qb, 4), vandq_u8(vshrq_n_u8(qh, 2), two))), off);
        for (int m = 0; m < MT; ++m) {
          const int8_t* aq = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b].qs + 128 * h + 16 * part;
          for (int g = 0; g < 4; ++g) {
            const int32x4_t p = dot16(vdupq_n_s32(0), q[g], vld1q_s8(aq + 32 * g));
            isum[m] = vmlaq_n_s32(isum[m], p, sc[2 * g + part]);
          }
        }
      }
    }
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
      acc[m] = vfmaq_n_f32(acc[m], cvt(isum[m]), d * a.d);
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = vaddvq_f32(acc[m]);
}

// ---------------------------------------------------------------- affine
// y = sum_b scale_g*d_b * (q_b . a_b)  +  sum_g bias_g * gsum_g.

inline float bias_dot(const float* biases, const float* gsum, int64_t ng) {
  float32x4_t acc = vdupq_n_f32(0.0f);
  int64_t g = 0;
  for (; g + 4 <= ng; g += 4) acc = vfmaq_f32(acc, vld1q_f32(biases + g), vld1q_f32(gsum + g));
  float s = vaddvq_f32(acc);
  for (; g < ng; ++g) s = __builtin_fmaf(biases[g], gsum[g], s);
  return s;
}

// Group sizes are 32, 64 or 128: the group of element e is e >> shift (an
// integer division per block costs more than the block's arithmetic).
inline int log2_gs(int gs) { return gs == 32 ? 5 : gs == 64 ? 6 : 7; }

struct AffineRow {
  const uint8_t* codes;
  const float* sf;  // scale per group
  const float* bf;  // bias per group (affine8: bias + 128*scale)
};

template <int MT>
void dot_affine4(const AffineActs& lay, const AffineRow& r, const uint8_t* acts, int64_t stride, float* out, int ldo) {
  const int64_t k = lay.k, nfull = k / 64;
  const int gshift = log2_gs(lay.group_size);
  float32x4_t acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = vdupq_n_f32(0.0f);
  const uint8x16_t nib = vdupq_n_u8(15);
  for (int64_t c = 0; c < nfull; ++c) {
    const uint8x16_t r0 = vld1q_u8(r.codes + 32 * c), r1 = vld1q_u8(r.codes + 32 * c + 16);
    const int8x16_t lo0 = s8(vandq_u8(r0, nib)), hi0 = s8(vshrq_n_u8(r0, 4));  // block 2c
    const int8x16_t lo1 = s8(vandq_u8(r1, nib)), hi1 = s8(vshrq_n_u8(r1, 4));  // block 2c+1
    const float s0 = r.sf[(64 * c) >> gshift], s1 = r.sf[(64 * c + 32) >> gshift];
    for (int m = 0; m < MT; ++m) {
      const uint8_t* row = act_row(acts, stride, m);
      const int8_t* a = reinterpret_cast<const int8_t*>(row) + 64 * c;
      const float* d = reinterpret_cast<const float*>(row + lay.off_d) + 2 * c;
      const float32x4_t v0 = vmulq_n_f32(cvt(dot32(lo0, a, hi0, a + 32)), s0 * d[0]);
      acc[m] = vaddq_f32(acc[m], vfmaq_n_f32(v0, cvt(dot32(lo1, a + 16, hi1, a + 48)), s1 * d[1]));
    }
  }
  if (k % 64) {  // trailing 32 elements: 16 code bytes, activations split 16/16
    const int64_t c = nfull;
    const uint8x16_t r0 = vld1q_u8(r.codes + 32 * c);
    const int8x16_t lo0 = s8(vandq_u8(r0, nib)), hi0 = s8(vshrq_n_u8(r0, 4));
    const float s0 = r.sf[(64 * c) >> gshift];
    for (int m = 0; m < MT; ++m) {
      const uint8_t* row = act_row(acts, stride, m);
      const int8_t* a = reinterpret_cast<const int8_t*>(row) + 64 * c;
      const float d0 = reinterpret_cast<const float*>(row + lay.off_d)[2 * c];
      acc[m] = vfmaq_n_f32(acc[m], cvt(dot32(lo0, a, hi0, a + 16)), s0 * d0);
    }
  }
  const int64_t ng = k >> gshift;
  for (int m = 0; m < MT; ++m) {
    const auto* gsum = reinterpret_cast<const float*>(act_row(acts, stride, m) + lay.off_gsum);
    out[m * ldo] = vaddvq_f32(acc[m]) + bias_dot(r.bf, gsum, ng);
  }
}

// Codes are used as q - 128 (int8); tile_affine<8> folds the 128*scale this
// removes from each group into the bias, as the AVX2 kernel does.
template <int MT>
void dot_affine8(const AffineActs& lay, const AffineRow& r, const uint8_t* acts, int64_t stride, float* out, int ldo) {
  const int64_t nb = lay.k / 32;
  const int gshift = log2_gs(lay.group_size);
  float32x4_t acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = vdupq_n_f32(0.0f);
  const uint8x16_t flip = vdupq_n_u8(0x80);
  auto decode = [&](int64_t b, int8x16_t q[2]) {
    q[0] = s8(veorq_u8(vld1q_u8(r.codes + 32 * b), flip));
    q[1] = s8(veorq_u8(vld1q_u8(r.codes + 32 * b + 16), flip));
  };
  auto product = [&](const int8x16_t q[2], const uint8_t* row, int64_t b) {
    const int8_t* a = reinterpret_cast<const int8_t*>(row) + 32 * b;
    const float d = reinterpret_cast<const float*>(row + lay.off_d)[b];
    return vmulq_n_f32(cvt(dot32(q[0], a, q[1], a + 16)), r.sf[(32 * b) >> gshift] * d);
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {  // pairs, as in dot_legacy
    int8x16_t q0[2], q1[2];
    decode(b, q0);
    decode(b + 1, q1);
    for (int m = 0; m < MT; ++m) {
      const uint8_t* row = act_row(acts, stride, m);
      acc[m] = vaddq_f32(acc[m], vaddq_f32(product(q0, row, b), product(q1, row, b + 1)));
    }
  }
  if (b < nb) {
    int8x16_t q0[2];
    decode(b, q0);
    for (int m = 0; m < MT; ++m) acc[m] = vaddq_f32(acc[m], product(q0, act_row(acts, stride, m), b));
  }
  const int64_t ng = lay.k >> gshift;
  for (int m = 0; m < MT; ++m) {
    const auto* gsum = reinterpret_cast<const float*>(act_row(acts, stride, m) + lay.off_gsum);
    out[m * ldo] = vaddvq_f32(acc[m]) + bias_dot(r.bf, gsum, ng);
  }
}

// ----------------------------------------------------------------- tiles

template <QType T, int MT>
void rows_gguf(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, float* res) {
  const int64_t rb = w.row_bytes();
  const int64_t nb = w.k / (T == QType::Q4_K || T == QType::Q6_K ? 256 : 32);
  for (int j = 0; j < nn; ++j) {
    const uint8_t* wrow = w.data + (n0 + j) * rb;
    if constexpr (T == QType::Q4_0) dot_legacy<Q4_0Ops, MT>(wrow, acts, stride, nb, res + j, nn);
    else if constexpr (T == QType::Q5_0) dot_legacy<Q5_0Ops, MT>(wrow, acts, stride, nb, res + j, nn);
    else if constexpr (T == QType::Q8_0) dot_legacy<Q8_0Ops, MT>(wrow, acts, stride, nb, res + j, nn);
    else if constexpr (T == QType::Q4_K) dot_q4_k<MT>(wrow, acts, stride, nb, res + j, nn);
    else dot_q6_k<MT>(wrow, acts, stride, nb, res + j, nn);
  }
}

// The switch on the tile height sits outside the row loop so each row loop
// is one straight-line instantiation.
template <QType T>
void tile_gguf(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, int mm, float* res) {
  switch (mm) {
    case 1: rows_gguf<T, 1>(w, acts, stride, n0, nn, res); break;
    case 2: rows_gguf<T, 2>(w, acts, stride, n0, nn, res); break;
    case 3: rows_gguf<T, 3>(w, acts, stride, n0, nn, res); break;
    default: rows_gguf<T, 4>(w, acts, stride, n0, nn, res); break;
  }
}

// `count` values of type t starting at src[offset] to fp32 (exact conversions).
void row_to_f32(const void* src, FType t, int64_t offset, int64_t count, float* dst) {
  int64_t i = 0;
  switch (t) {
    case FType::F32:
      __builtin_memcpy(dst, static_cast<const float*>(src) + offset, static_cast<size_t>(count) * 4);
      return;
    case FType::F16: {
      const uint16_t* h = static_cast<const uint16_t*>(src) + offset;
      for (; i + 4 <= count; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
      for (; i < count; ++i) dst[i] = f16(h[i]);
      return;
    }
    case FType::BF16: {
      const uint16_t* h = static_cast<const uint16_t*>(src) + offset;
      for (; i + 4 <= count; i += 4) vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(h + i), 16)));
      for (; i < count; ++i) dst[i] = bf16_to_fp32(h[i]);
      return;
    }
  }
}

template <int Bits, int MT>
void rows_affine(const QWeightView& w, const AffineActs& lay, const uint8_t* acts, int64_t stride, int64_t n0, int nn,
                 float* res) {
  const int64_t ng = w.k / w.group_size, rb = w.row_bytes();
  float* sf = neon_scratch(2 * ng);
  float* bf = sf + ng;
  for (int j = 0; j < nn; ++j) {
    const int64_t n = n0 + j;
    row_to_f32(w.scales, w.scale_type, n * ng, ng, sf);
    row_to_f32(w.biases, w.scale_type, n * ng, ng, bf);
    if constexpr (Bits == 8) {
      for (int64_t g = 0; g < ng; ++g) bf[g] += 128.0f * sf[g];
    }
    const AffineRow r{w.data + n * rb, sf, bf};
    if constexpr (Bits == 4) dot_affine4<MT>(lay, r, acts, stride, res + j, nn);
    else dot_affine8<MT>(lay, r, acts, stride, res + j, nn);
  }
}

template <int Bits>
void tile_affine(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, int mm, float* res) {
  const AffineActs lay(w.k, w.group_size);
  switch (mm) {
    case 1: rows_affine<Bits, 1>(w, lay, acts, stride, n0, nn, res); break;
    case 2: rows_affine<Bits, 2>(w, lay, acts, stride, n0, nn, res); break;
    case 3: rows_affine<Bits, 3>(w, lay, acts, stride, n0, nn, res); break;
    default: rows_affine<Bits, 4>(w, lay, acts, stride, n0, nn, res); break;
  }
}

// ------------------------------------------------------------ activations

void to_f32_neon(const void* x, FType t, int64_t k, float* out) { row_to_f32(x, t, 0, k, out); }

// Same arithmetic as quantize_row_scalar, bit for bit: amax ignores NaN (FMAXNM
// like fmax), d = amax/127, codes = round-half-even(x * (127/amax)) (FRINTN)
// clamped to [-127, 127] with NaN -> -127 (FMAXNM again).
void quantize_row_neon(const float* x, int64_t k, int block, int8_t* qs, float* d, int16_t* sums16) {
  const float32x4_t lo = vdupq_n_f32(-127.0f), hi = vdupq_n_f32(127.0f);
  for (int64_t b = 0; b < k / block; ++b) {
    const float* xb = x + b * block;
    float32x4_t mx = vdupq_n_f32(0.0f);
    for (int i = 0; i < block; i += 4) mx = vmaxnmq_f32(mx, vabsq_f32(vld1q_f32(xb + i)));
    const float amax = vmaxnmvq_f32(mx);
    const bool zero = !(amax >= kTinyAmax);
    const float32x4_t id = vdupq_n_f32(zero ? 0.0f : 127.0f / amax);
    d[b] = zero ? 0.0f : amax / 127.0f;
    for (int i = 0; i < block; i += 16) {
      int32x4_t v[4];
      for (int u = 0; u < 4; ++u) {
        const float32x4_t r = vrndnq_f32(vmulq_f32(vld1q_f32(xb + i + 4 * u), id));
        v[u] = vcvtq_s32_f32(vminq_f32(vmaxnmq_f32(r, lo), hi));
      }
      const int16x8_t p0 = vcombine_s16(vmovn_s32(v[0]), vmovn_s32(v[1]));
      const int16x8_t p1 = vcombine_s16(vmovn_s32(v[2]), vmovn_s32(v[3]));
      vst1q_s8(qs + b * block + i, vcombine_s8(vmovn_s16(p0), vmovn_s16(p1)));
    }
  }
  for (int64_t s = 0; s < k / 16; ++s) sums16[s] = vaddlvq_s8(vld1q_s8(qs + 16 * s));
}

}  // namespace

const IsaKernels* kernels() {
  static const IsaKernels k = {
      TF_QMM_NEON_LEVEL,
      to_f32_neon,
      quantize_row_neon,
      {tile_gguf<QType::Q4_0>, tile_gguf<QType::Q5_0>, tile_gguf<QType::Q8_0>, tile_gguf<QType::Q4_K>,
       tile_gguf<QType::Q6_K>, tile_affine<4>, tile_affine<8>},
  };
  return &k;
}

}  // namespace tinyfast::cpu::qk::TF_QMM_NEON_NS
