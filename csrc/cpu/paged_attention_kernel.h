// Paged attention work items, compiled once per instruction set: the including
// file defines TF_ATTN_NS (baseline, avx2) and its own compile flags. Written
// with GCC/Clang vector extensions (8 floats), which lower to two SSE/NEON
// registers in the baseline build and one AVX register in the AVX2 build.
//
// Numerics, shared by every build:
//  * f32 everywhere inside; q is scaled while it is converted.
//  * Each logit is one dot product with 8 lanes accumulated over head_dim in
//    order, then summed in the fixed tree ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
//  * Online softmax per query row over key tiles aligned to absolute multiples
//    of block_k; the row sum and the output accumulate keys in position order.
//  * Keys a row cannot see get logit -inf (p = 0 exactly), so a row's result
//    does not depend on which other rows share its tile or batch.
//  * No FMA contraction by the compiler (-ffp-contract=off); the AVX2 build uses
//    explicit FMA instructions, so results are reproducible per build.
// No standard-library templates here (see paged_attention_impl.h).
#ifndef TF_ATTN_NS
#error "define TF_ATTN_NS before including paged_attention_kernel.h"
#endif

#include <cstdint>
#include <cstring>

#include "cpu/paged_attention_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TF_ATTN_X86_AVX2 1
#endif

namespace tinyfast::cpu::attn::TF_ATTN_NS {
namespace {

#include "cpu/vec8.h"

constexpr float kNegInf = -__builtin_inff();

// A software prefetch into L2 the compiler cannot drop (GCC deletes loops whose
// only statements are __builtin_prefetch). Never faults, even past the pool.
inline void prefetch_l2(const char* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht1 %0" : : "m"(*p));
#elif defined(__aarch64__)
  asm volatile("prfm pldl2keep, %0" : : "Q"(*p));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

inline float hmax(f32x8 v) {
  float r = v[0];
  for (int i = 1; i < 8; ++i) r = v[i] > r ? v[i] : r;
  return r;
}

// Lane sums of eight accumulators in the fixed tree of the file comment;
// written as horizontal adds so the AVX2 build gets vhaddps.
inline f32x8 hadd(f32x8 a, f32x8 b) {
  return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}
inline f32x8 hsum8x8(f32x8 a0, f32x8 a1, f32x8 a2, f32x8 a3, f32x8 a4, f32x8 a5, f32x8 a6, f32x8 a7) {
  f32x8 x = hadd(hadd(a0, a1), hadd(a2, a3));
  f32x8 y = hadd(hadd(a4, a5), hadd(a6, a7));
  return __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15);
}

inline float sexp(float x) { return vexp(vsplat(x))[0]; }

// c * tanh(x / c)
inline f32x8 vsoftcap(f32x8 x, float cap, float inv_cap) { return vtanh(x * vsplat(inv_cap)) * vsplat(cap); }

// ---- element conversions ---------------------------------------------------

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t em = h & 0x7fffu;
  uint32_t bits;
  if (em >= 0x7c00u) {
    bits = (em << 13) | 0x7f800000u;  // inf / nan
  } else {
    float f;
    uint32_t shifted = em << 13;
    std::memcpy(&f, &shifted, 4);
    f *= 0x1p112f;  // rebias; exact for normals and subnormals
    std::memcpy(&bits, &f, 4);
  }
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Round to nearest even, NaN stays NaN, overflow goes to inf.
inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  uint32_t o;
  if (x >= 0x47800000u) {  // >= 65536 (rounds to inf) or inf / nan
    o = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (x < 0x38800000u) {  // below 2^-14: subnormal half or zero
    float a;
    std::memcpy(&a, &x, 4);
    a += 0.5f;  // aligns the 10 mantissa bits at the bottom; FPU rounds to even
    uint32_t ab;
    std::memcpy(&ab, &a, 4);
    o = ab - 0x3f000000u;
  } else {
    const uint32_t mant_odd = (x >> 13) & 1u;
    x += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round half to even
    o = x >> 13;
  }
  return static_cast<uint16_t>(o | sign);
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

template <ElemType E>
inline float load1(const void* p, int64_t i) {
  if constexpr (E == ElemType::f32) return static_cast<const float*>(p)[i];
  else if constexpr (E == ElemType::f16) return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  else return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}

template <ElemType E>
inline void store1(void* p, int64_t i, float x) {
  if constexpr (E == ElemType::f32) static_cast<float*>(p)[i] = x;
  else if constexpr (E == ElemType::f16) static_cast<uint16_t*>(p)[i] = f32_to_f16(x);
  else static_cast<uint16_t*>(p)[i] = f32_to_bf16(x);
}

// Eight consecutive elements as f32.
template <ElemType E>
inline f32x8 load8(const void* p) {
  if constexpr (E == ElemType::f32) {
    return vload(static_cast<const float*>(p));
  } else {
    u16x8 h;
    std::memcpy(&h, p, sizeof h);
    if constexpr (E == ElemType::bf16) {
      return (f32x8)(__builtin_convertvector(h, u32x8) << 16);
    } else {
#ifdef TF_ATTN_X86_AVX2
      return (f32x8)_mm256_cvtph_ps((__m128i)h);
#else
      u32x8 x = __builtin_convertvector(h, u32x8);
      u32x8 sign = (x & 0x8000u) << 16;
      u32x8 em = x & 0x7fffu;
      f32x8 f = (f32x8)(em << 13) * vsplat(0x1p112f);
      u32x8 bits = (u32x8)f;
      u32x8 special = (u32x8)(em >= 0x7c00u);
      bits = (bits & ~special) | (((em << 13) | 0x7f800000u) & special);
      return (f32x8)(bits | sign);
#endif
    }
  }
}

// dst[0:pad) = src[0:n) * mul, zero padded.
template <ElemType E>
inline void convert_row(const void* src, int n, int pad, float mul, float* dst) {
  int d = 0;
  const char* s = static_cast<const char*>(src);
  const int esz = E == ElemType::f32 ? 4 : 2;
  for (; d + 8 <= n; d += 8) vstore(dst + d, load8<E>(s + static_cast<int64_t>(d) * esz) * vsplat(mul));
  for (; d < n; ++d) dst[d] = load1<E>(src, d) * mul;
  for (; d < pad; ++d) dst[d] = 0.0f;
}

// ---- micro kernels -----------------------------------------------------------
// Key/value rows are `const void*` of element type R: f32 scratch rows, or rows
// read in place from the pools (converted on the fly; exact, so results are the
// same either way).
//
// `pf` (or nullptr): pool rows of the next key tile, aligned with the keys of
// this call, with `pe` bytes per element. The kernels prefetch them as they go,
// so memory streams the next tile while this one is computed; one burst per
// tile would stall on the few misses a core can track and then leave memory
// idle during the arithmetic.

template <ElemType R>
inline f32x8 ld(const void* row, int d) {
  return load8<R>(static_cast<const char*>(row) + static_cast<int64_t>(d) * (R == ElemType::f32 ? 4 : 2));
}

// l[r][0:2] = q_r . k[0:2] for four rows (each key row is read once for all four).
template <ElemType R>
inline void qk_4x2(const float* const* q, const void* const* k, int dp, float* const* l, const char* const* pf,
                   int pe) {
  f32x8 a0{}, a1{}, b0{}, b1{}, c0{}, c1{}, e0{}, e1{};
  const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3];
  const void *k0 = k[0], *k1 = k[1];
  for (int d = 0; d < dp; d += 8) {
    if (pf) prefetch_l2(pf[0] + d * pe), prefetch_l2(pf[1] + d * pe);
    const f32x8 x0 = ld<R>(k0, d), x1 = ld<R>(k1, d);
    f32x8 y = vload(q0 + d);
    a0 = vfmadd(y, x0, a0);
    a1 = vfmadd(y, x1, a1);
    y = vload(q1 + d);
    b0 = vfmadd(y, x0, b0);
    b1 = vfmadd(y, x1, b1);
    y = vload(q2 + d);
    c0 = vfmadd(y, x0, c0);
    c1 = vfmadd(y, x1, c1);
    y = vload(q3 + d);
    e0 = vfmadd(y, x0, e0);
    e1 = vfmadd(y, x1, e1);
  }
  const f32x8 s = hsum8x8(a0, a1, b0, b1, c0, c1, e0, e1);
  for (int r = 0; r < 4; ++r) {
    l[r][0] = s[2 * r];
    l[r][1] = s[2 * r + 1];
  }
}

// la[0:4], lb[0:4] = q_a . k[0:4], q_b . k[0:4]
template <ElemType R>
inline void qk_2x4(const float* qa, const float* qb, const void* const* k, int dp, float* la, float* lb,
                   const char* const* pf, int pe) {
  f32x8 a0{}, a1{}, a2{}, a3{}, b0{}, b1{}, b2{}, b3{};
  const void *k0 = k[0], *k1 = k[1], *k2 = k[2], *k3 = k[3];
  for (int d = 0; d < dp; d += 8) {
    if (pf)
      for (int x = 0; x < 4; ++x) prefetch_l2(pf[x] + d * pe);
    const f32x8 x = vload(qa + d), y = vload(qb + d);
    f32x8 kv = ld<R>(k0, d);
    a0 = vfmadd(x, kv, a0);
    b0 = vfmadd(y, kv, b0);
    kv = ld<R>(k1, d);
    a1 = vfmadd(x, kv, a1);
    b1 = vfmadd(y, kv, b1);
    kv = ld<R>(k2, d);
    a2 = vfmadd(x, kv, a2);
    b2 = vfmadd(y, kv, b2);
    kv = ld<R>(k3, d);
    a3 = vfmadd(x, kv, a3);
    b3 = vfmadd(y, kv, b3);
  }
  const f32x8 s = hsum8x8(a0, a1, a2, a3, b0, b1, b2, b3);
  for (int i = 0; i < 4; ++i) {
    la[i] = s[i];
    lb[i] = s[4 + i];
  }
}

// la[0:8] = q_a . k[0:8]
template <ElemType R>
inline void qk_1x8(const float* qa, const void* const* k, int dp, float* la, const char* const* pf, int pe) {
  f32x8 a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{};
  for (int d = 0; d < dp; d += 8) {
    if (pf)
      for (int x = 0; x < 8; ++x) prefetch_l2(pf[x] + d * pe);
    const f32x8 x = vload(qa + d);
    a0 = vfmadd(x, ld<R>(k[0], d), a0);
    a1 = vfmadd(x, ld<R>(k[1], d), a1);
    a2 = vfmadd(x, ld<R>(k[2], d), a2);
    a3 = vfmadd(x, ld<R>(k[3], d), a3);
    a4 = vfmadd(x, ld<R>(k[4], d), a4);
    a5 = vfmadd(x, ld<R>(k[5], d), a5);
    a6 = vfmadd(x, ld<R>(k[6], d), a6);
    a7 = vfmadd(x, ld<R>(k[7], d), a7);
  }
  vstore(la, hsum8x8(a0, a1, a2, a3, a4, a5, a6, a7));
}

// acc[r] += sum_j p[r][j] v[j] for four rows; every element accumulates keys in order.
template <ElemType R>
inline void pv_4rows(float* const* acc, const float* const* p, const void* const* v, int nk, int dp,
                     const char* const* pf, int pe) {
  int d = 0;
  for (; d + 16 <= dp; d += 16) {
    f32x8 a0 = vload(acc[0] + d), b0 = vload(acc[1] + d), c0 = vload(acc[2] + d), e0 = vload(acc[3] + d);
    f32x8 a1 = vload(acc[0] + d + 8), b1 = vload(acc[1] + d + 8), c1 = vload(acc[2] + d + 8),
          e1 = vload(acc[3] + d + 8);
    for (int j = 0; j < nk; ++j) {
      if (pf) prefetch_l2(pf[j] + d * pe);
      const f32x8 x0 = ld<R>(v[j], d), x1 = ld<R>(v[j], d + 8);
      f32x8 s = vsplat(p[0][j]);
      a0 = vfmadd(s, x0, a0);
      a1 = vfmadd(s, x1, a1);
      s = vsplat(p[1][j]);
      b0 = vfmadd(s, x0, b0);
      b1 = vfmadd(s, x1, b1);
      s = vsplat(p[2][j]);
      c0 = vfmadd(s, x0, c0);
      c1 = vfmadd(s, x1, c1);
      s = vsplat(p[3][j]);
      e0 = vfmadd(s, x0, e0);
      e1 = vfmadd(s, x1, e1);
    }
    vstore(acc[0] + d, a0), vstore(acc[1] + d, b0), vstore(acc[2] + d, c0), vstore(acc[3] + d, e0);
    vstore(acc[0] + d + 8, a1), vstore(acc[1] + d + 8, b1), vstore(acc[2] + d + 8, c1), vstore(acc[3] + d + 8, e1);
  }
  if (d < dp) {  // dp is a multiple of 8
    f32x8 a0 = vload(acc[0] + d), b0 = vload(acc[1] + d), c0 = vload(acc[2] + d), e0 = vload(acc[3] + d);
    for (int j = 0; j < nk; ++j) {
      if (pf) prefetch_l2(pf[j] + d * pe);
      const f32x8 x0 = ld<R>(v[j], d);
      a0 = vfmadd(vsplat(p[0][j]), x0, a0);
      b0 = vfmadd(vsplat(p[1][j]), x0, b0);
      c0 = vfmadd(vsplat(p[2][j]), x0, c0);
      e0 = vfmadd(vsplat(p[3][j]), x0, e0);
    }
    vstore(acc[0] + d, a0), vstore(acc[1] + d, b0), vstore(acc[2] + d, c0), vstore(acc[3] + d, e0);
  }
}

template <ElemType R>
inline void pv_2rows(float* acc_a, float* acc_b, const float* pa, const float* pb, const void* const* v, int nk,
                     int dp, const char* const* pf, int pe) {
  int d = 0;
  for (; d + 32 <= dp; d += 32) {
    f32x8 a0 = vload(acc_a + d), a1 = vload(acc_a + d + 8), a2 = vload(acc_a + d + 16), a3 = vload(acc_a + d + 24);
    f32x8 b0 = vload(acc_b + d), b1 = vload(acc_b + d + 8), b2 = vload(acc_b + d + 16), b3 = vload(acc_b + d + 24);
    for (int j = 0; j < nk; ++j) {
      if (pf) prefetch_l2(pf[j] + d * pe), prefetch_l2(pf[j] + (d + 16) * pe);
      const f32x8 x0 = ld<R>(v[j], d), x1 = ld<R>(v[j], d + 8), x2 = ld<R>(v[j], d + 16), x3 = ld<R>(v[j], d + 24);
      const f32x8 sa = vsplat(pa[j]), sb = vsplat(pb[j]);
      a0 = vfmadd(sa, x0, a0);
      a1 = vfmadd(sa, x1, a1);
      a2 = vfmadd(sa, x2, a2);
      a3 = vfmadd(sa, x3, a3);
      b0 = vfmadd(sb, x0, b0);
      b1 = vfmadd(sb, x1, b1);
      b2 = vfmadd(sb, x2, b2);
      b3 = vfmadd(sb, x3, b3);
    }
    vstore(acc_a + d, a0), vstore(acc_a + d + 8, a1), vstore(acc_a + d + 16, a2), vstore(acc_a + d + 24, a3);
    vstore(acc_b + d, b0), vstore(acc_b + d + 8, b1), vstore(acc_b + d + 16, b2), vstore(acc_b + d + 24, b3);
  }
  for (; d < dp; d += 8) {
    f32x8 a = vload(acc_a + d), b = vload(acc_b + d);
    for (int j = 0; j < nk; ++j) {
      if (pf) prefetch_l2(pf[j] + d * pe);
      const f32x8 x = ld<R>(v[j], d);
      a = vfmadd(vsplat(pa[j]), x, a);
      b = vfmadd(vsplat(pb[j]), x, b);
    }
    vstore(acc_a + d, a), vstore(acc_b + d, b);
  }
}

template <ElemType R>
inline void pv_1row(float* acc, const float* p, const void* const* v, int nk, int dp, const char* const* pf,
                    int pe) {
  int d = 0;
  for (; d + 64 <= dp; d += 64) {
    f32x8 a[8];
    for (int i = 0; i < 8; ++i) a[i] = vload(acc + d + 8 * i);
    for (int j = 0; j < nk; ++j) {
      if (pf)
        for (int x = 0; x < 64; x += 16) prefetch_l2(pf[j] + (d + x) * pe);
      const f32x8 s = vsplat(p[j]);
      for (int i = 0; i < 8; ++i) a[i] = vfmadd(s, ld<R>(v[j], d + 8 * i), a[i]);
    }
    for (int i = 0; i < 8; ++i) vstore(acc + d + 8 * i, a[i]);
  }
  for (; d < dp; d += 8) {
    f32x8 a = vload(acc + d);
    for (int j = 0; j < nk; ++j) {
      if (pf) prefetch_l2(pf[j] + d * pe);
      a = vfmadd(vsplat(p[j]), ld<R>(v[j], d), a);
    }
    vstore(acc + d, a);
  }
}

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// ---- one key tile for the active rows: logits, online softmax, P.V -------------

inline void prefetch_rows(const char* const* rows, int begin, int end, int64_t row_bytes) {
  for (int j = begin; j < end; ++j)
    for (int64_t b = 0; b < row_bytes; b += 64) prefetch_l2(rows[j] + b);
}

// kn/vn: pool rows of the next tile (nn of them, padded to block_k), prefetched on the way.
template <ElemType R>
void attend_tile(const PagedAttentionArgs& a, const KernelConfig& c, const Workspace& ws, int na, int64_t k0,
                 int64_t k1, const char* const* kn, const char* const* vn, int nn, int pe) {
  const int dp = c.head_dim_pad, bk = c.block_k;
  const int nk = static_cast<int>(k1 - k0);
  const int nk8 = (nk + 7) & ~7;
  const int64_t row_bytes = static_cast<int64_t>(a.head_dim) * pe;
  const bool pf = nn > 0;

  // logits, rows in groups of 4, 2, 1 (padding keys are computed, then masked)
  int i = 0;
  for (; i + 4 <= na; i += 4) {
    const float* qr[4];
    float* lr[4];
    for (int x = 0; x < 4; ++x) {
      qr[x] = ws.q + static_cast<int64_t>(ws.active[i + x]) * dp;
      lr[x] = ws.logits + static_cast<int64_t>(ws.active[i + x]) * bk;
    }
    for (int j = 0; j < nk; j += 2) {
      float* lj[4] = {lr[0] + j, lr[1] + j, lr[2] + j, lr[3] + j};
      qk_4x2<R>(qr, ws.kp + j, dp, lj, pf && i == 0 ? kn + j : nullptr, pe);
    }
  }
  for (; i + 2 <= na; i += 2) {
    const int ra = ws.active[i], rb = ws.active[i + 1];
    float* la = ws.logits + static_cast<int64_t>(ra) * bk;
    float* lb = ws.logits + static_cast<int64_t>(rb) * bk;
    for (int j = 0; j < nk; j += 4)
      qk_2x4<R>(ws.q + static_cast<int64_t>(ra) * dp, ws.q + static_cast<int64_t>(rb) * dp, ws.kp + j, dp, la + j,
                lb + j, pf && i == 0 ? kn + j : nullptr, pe);
  }
  if (i < na) {
    const int ra = ws.active[i];
    float* la = ws.logits + static_cast<int64_t>(ra) * bk;
    for (int j = 0; j < nk; j += 8)
      qk_1x8<R>(ws.q + static_cast<int64_t>(ra) * dp, ws.kp + j, dp, la + j, pf && i == 0 ? kn + j : nullptr, pe);
  }
  if (pf && nn > nk) prefetch_rows(kn, nk, nn, row_bytes);

  // softcap, mask, online softmax
  const bool has_cap = a.softcap > 0.0f;
  const float inv_cap = has_cap ? 1.0f / a.softcap : 0.0f;
  int nv = 0;
  for (i = 0; i < na; ++i) {
    const int r = ws.active[i];
    float* lr = ws.logits + static_cast<int64_t>(r) * bk;
    if (has_cap)
      for (int j = 0; j < nk8; j += 8) vstore(lr + j, vsoftcap(vload(lr + j), a.softcap, inv_cap));
    const int64_t vlo = max64(ws.vis_lo[r], k0) - k0, vhi = min64(ws.vis_hi[r], k1) - k0;
    for (int64_t j = 0; j < vlo; ++j) lr[j] = kNegInf;
    for (int64_t j = vhi; j < nk8; ++j) lr[j] = kNegInf;
    f32x8 mv = vload(lr);
    for (int j = 8; j < nk8; j += 8) mv = vmax(mv, vload(lr + j));
    const float tile_max = hmax(mv);
    const float m_old = ws.m[r];
    const float m_new = tile_max > m_old ? tile_max : m_old;
    if (!(m_new > kNegInf)) continue;  // nothing finite to attend to (inf/nan inputs)
    const float alpha = sexp(m_old - m_new);
    const f32x8 mn = vsplat(m_new);
    for (int j = 0; j < nk8; j += 8) vstore(lr + j, vexp(vload(lr + j) - mn));
    float sum = ws.l[r] * alpha;
    for (int j = 0; j < nk; ++j) sum += lr[j];
    ws.l[r] = sum;
    ws.m[r] = m_new;
    if (alpha != 1.0f) {
      float* ar = ws.acc + static_cast<int64_t>(r) * dp;
      const f32x8 al = vsplat(alpha);
      for (int d = 0; d < dp; d += 8) vstore(ar + d, vload(ar + d) * al);
    }
    ws.active[nv++] = r;
  }

  // P . V, rows in groups of 4, 2, 1
  float* accs[4];
  const float* ps[4];
  auto take = [&](int x, int r) {
    accs[x] = ws.acc + static_cast<int64_t>(r) * dp;
    ps[x] = ws.logits + static_cast<int64_t>(r) * bk;
  };
  i = 0;
  for (; i + 4 <= nv; i += 4) {
    for (int x = 0; x < 4; ++x) take(x, ws.active[i + x]);
    pv_4rows<R>(accs, ps, ws.vp, nk, dp, pf && i == 0 ? vn : nullptr, pe);
  }
  for (; i + 2 <= nv; i += 2) {
    take(0, ws.active[i]);
    take(1, ws.active[i + 1]);
    pv_2rows<R>(accs[0], accs[1], ps[0], ps[1], ws.vp, nk, dp, pf && i == 0 ? vn : nullptr, pe);
  }
  if (i < nv) {
    take(0, ws.active[i]);
    pv_1row<R>(accs[0], ps[0], ws.vp, nk, dp, pf && i == 0 ? vn : nullptr, pe);
  }
  if (pf) prefetch_rows(vn, nv > 0 ? nk : 0, nn, row_bytes);
}

// ---- one work item: (query tile, kv heads kvh0 .. kvh0 + t.kv_group, key partition) --

template <ElemType E>
void run_item_t(const PagedAttentionArgs& a, const KernelConfig& c, const TilePlan& t, int kvh0, int part,
                const Workspace& ws, const Partials& partials) {
  const int G = c.group, dp = c.head_dim_pad, D = a.head_dim, bk = c.block_k;
  const int nkv = t.kv_group;
  const int nq = t.q_end - t.q_begin;
  const int rows1 = nq * G;  // rows per kv head; row r = kl * rows1 + j * G + g
  const int rows = rows1 * nkv;
  const int64_t H = a.num_heads;
  const int esz = elem_size(E);
  // f16/bf16 rows are converted on the fly when at most 16 query rows use them
  // (measured: re-converting in up to four 4-row passes beats storing f32
  // scratch, which is store-bound); bigger items (prefill tiles) convert each
  // tile once into scratch. Padding to head_dim_pad needs the scratch.
  const bool in_place = dp == D && (E == ElemType::f32 || rows1 <= 16);

  for (int kl = 0; kl < nkv; ++kl) {
    for (int j = 0; j < nq; ++j) {
      for (int g = 0; g < G; ++g) {
        const int r = kl * rows1 + j * G + g;
        const int64_t src = ((t.q_begin + j) * H + static_cast<int64_t>(kvh0 + kl) * G + g) * D;
        convert_row<E>(static_cast<const char*>(a.q) + src * esz, D, dp, a.scale,
                       ws.q + static_cast<int64_t>(r) * dp);
        const int32_t pos = t.first_pos + j;
        ws.vis_lo[r] = a.sliding_window > 0 ? pos - a.sliding_window + 1 : 0;
        ws.vis_hi[r] = a.causal ? pos + 1 : t.context_len;
        ws.m[r] = kNegInf;
        ws.l[r] = 0.0f;
      }
    }
  }
  std::memset(ws.acc, 0, sizeof(float) * static_cast<size_t>(rows) * dp);

  int64_t lo = t.key_lo, hi = t.key_hi;
  if (t.num_parts > 1) {
    const int64_t p0 = static_cast<int64_t>(t.part_begin + part) * AttentionTiling::kPartition;
    lo = max64(lo, p0);
    hi = min64(hi, p0 + AttentionTiling::kPartition);
  }

  const int32_t* table = a.block_tables + static_cast<int64_t>(t.seq) * a.max_blocks;
  const int64_t bs = a.block_size;
  const char* kbase = static_cast<const char*>(a.k_cache) + kvh0 * a.k_strides[2] * esz;
  const char* vbase = static_cast<const char*>(a.v_cache) + kvh0 * a.v_strides[2] * esz;
  const int64_t row_bytes = static_cast<int64_t>(D) * esz;
  const int64_t kstep = a.k_strides[2] * esz, vstep = a.v_strides[2] * esz;  // next kv head
  const int64_t ptrs = bk + 8;  // per kv head and tile

  // Raw pool rows [tile slot][kv head][key] of the current and the next tile;
  // the next tile's rows are prefetched while the current one is computed (see
  // the micro kernels). Walks the block table instead of dividing per key.
  const char** cur_k = ws.kraw;
  const char** cur_v = ws.vraw;
  const char** nxt_k = ws.kraw + nkv * ptrs;
  const char** nxt_v = ws.vraw + nkv * ptrs;
  auto gather = [&](int64_t k0, int64_t k1, const char** kr, const char** vr) {
    int64_t b = k0 / bs, off = k0 % bs;
    for (int64_t pos = k0; pos < k1; ++b, off = 0) {
      int32_t blk = table[b];
      // Validated by the caller; the guard keeps a bad table from reading outside the pool.
      if (blk < 0 || blk >= a.num_blocks) blk = 0;
      const char* k_tok = kbase + (blk * a.k_strides[0] + off * a.k_strides[1]) * esz;
      const char* v_tok = vbase + (blk * a.v_strides[0] + off * a.v_strides[1]) * esz;
      const int64_t n = min64(bs - off, k1 - pos);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t j = pos - k0 + i;
        for (int kl = 0; kl < nkv; ++kl) {
          kr[kl * ptrs + j] = k_tok + i * a.k_strides[1] * esz + kl * kstep;
          vr[kl * ptrs + j] = v_tok + i * a.v_strides[1] * esz + kl * vstep;
        }
      }
      pos += n;
    }
    const int n = static_cast<int>(k1 - k0);
    // Padding up to block_k: the kernels prefetch the next tile's rows by the
    // current tile's key index, and the current tile may be longer.
    for (int kl = 0; kl < nkv; ++kl)
      for (int j = n; j < bk; ++j) kr[kl * ptrs + j] = kr[kl * ptrs], vr[kl * ptrs + j] = vr[kl * ptrs];
    return n;
  };
  auto prefetch_all = [&](const char** kr, const char** vr, int n) {
    for (int kl = 0; kl < nkv; ++kl) {
      prefetch_rows(kr + kl * ptrs, 0, n, row_bytes);
      prefetch_rows(vr + kl * ptrs, 0, n, row_bytes);
    }
  };
  const int64_t first_tile = (lo / bk) * bk;
  prefetch_all(cur_k, cur_v, gather(lo, min64(hi, first_tile + bk), cur_k, cur_v));

  for (int64_t kt = first_tile; kt < hi; kt += bk) {
    const int64_t k0 = max64(kt, lo), k1 = min64(kt + bk, hi);
    const int nk = static_cast<int>(k1 - k0);
    const int n_next = kt + bk < hi ? gather(kt + bk, min64(hi, kt + 2 * bk), nxt_k, nxt_v) : 0;

    // The kv heads one after the other: each token's K/V row (all heads) is used
    // up within this tile, which keeps DRAM pages, TLB entries and adjacent-line
    // prefetches useful for pools with several kv heads.
    for (int kl = 0; kl < nkv; ++kl) {
      const char* const* ck = cur_k + kl * ptrs;
      const char* const* cv = cur_v + kl * ptrs;
      int na = 0;
      for (int r = kl * rows1; r < (kl + 1) * rows1; ++r)
        if (max64(ws.vis_lo[r], k0) < min64(ws.vis_hi[r], k1)) ws.active[na++] = r;
      if (na == 0) {
        if (n_next > 0) {
          prefetch_rows(nxt_k + kl * ptrs, 0, n_next, row_bytes);
          prefetch_rows(nxt_v + kl * ptrs, 0, n_next, row_bytes);
        }
        continue;
      }
      for (int j = 0; j < nk; ++j) {
        if (in_place) {
          ws.kp[j] = ck[j];
          ws.vp[j] = cv[j];
        } else {
          float* kd = ws.k + static_cast<int64_t>(j) * dp;
          float* vd = ws.v + static_cast<int64_t>(j) * dp;
          convert_row<E>(ck[j], D, dp, 1.0f, kd);
          convert_row<E>(cv[j], D, dp, 1.0f, vd);
          ws.kp[j] = kd;
          ws.vp[j] = vd;
        }
      }
      for (int j = nk; j < ((nk + 7) & ~7); ++j) ws.kp[j] = ws.kp[0];
      if (in_place)
        attend_tile<E>(a, c, ws, na, k0, k1, nxt_k + kl * ptrs, nxt_v + kl * ptrs, n_next, esz);
      else
        attend_tile<ElemType::f32>(a, c, ws, na, k0, k1, nxt_k + kl * ptrs, nxt_v + kl * ptrs, n_next, esz);
    }
    const char** tk = cur_k;
    const char** tv = cur_v;
    cur_k = nxt_k, cur_v = nxt_v, nxt_k = tk, nxt_v = tv;
  }

  for (int kl = 0; kl < nkv; ++kl) {
    const int kvh = kvh0 + kl;
    const float* acc = ws.acc + static_cast<int64_t>(kl) * rows1 * dp;
    const float* m = ws.m + kl * rows1;
    const float* l = ws.l + kl * rows1;
    if (t.num_parts > 1) {
      const int64_t base = t.partial_offset + (static_cast<int64_t>(part) * a.num_kv_heads + kvh) * rows1;
      std::memcpy(partials.acc + base * dp, acc, sizeof(float) * static_cast<size_t>(rows1) * dp);
      std::memcpy(partials.m + base, m, sizeof(float) * rows1);
      std::memcpy(partials.l + base, l, sizeof(float) * rows1);
      continue;
    }
    for (int r = 0; r < rows1; ++r) {
      const int j = r / G, g = r % G;
      const int64_t dst = ((t.q_begin + j) * H + static_cast<int64_t>(kvh) * G + g) * D;
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
      const float* ar = acc + static_cast<int64_t>(r) * dp;
      for (int d = 0; d < D; ++d) store1<E>(a.out, dst + d, ar[d] * inv);
    }
  }
}

// Merges the partitions of a split tile, in partition order.
template <ElemType E>
void combine_t(const PagedAttentionArgs& a, const KernelConfig& c, const TilePlan& t, int kvh, const Workspace& ws,
               const Partials& partials) {
  const int G = c.group, dp = c.head_dim_pad, D = a.head_dim;
  const int rows = (t.q_end - t.q_begin) * G;
  const int64_t H = a.num_heads;
  const int64_t stride = static_cast<int64_t>(a.num_kv_heads) * rows;  // between partitions
  const int64_t base0 = t.partial_offset + static_cast<int64_t>(kvh) * rows;
  float* o = ws.acc;  // [dp]
  for (int r = 0; r < rows; ++r) {
    float m_max = kNegInf;
    for (int p = 0; p < t.num_parts; ++p) {
      const float m = partials.m[base0 + p * stride + r];
      m_max = m > m_max ? m : m_max;
    }
    std::memset(o, 0, sizeof(float) * dp);
    float l_sum = 0.0f;
    for (int p = 0; p < t.num_parts; ++p) {
      const int64_t i = base0 + p * stride + r;
      const float w = sexp(partials.m[i] - m_max);
      l_sum += partials.l[i] * w;
      const float* src = partials.acc + i * dp;
      const f32x8 wv = vsplat(w);
      for (int d = 0; d < dp; d += 8) vstore(o + d, vfmadd(vload(src + d), wv, vload(o + d)));
    }
    const float inv = l_sum > 0.0f ? 1.0f / l_sum : 0.0f;
    const int j = r / G, g = r % G;
    const int64_t dst = ((t.q_begin + j) * H + static_cast<int64_t>(kvh) * G + g) * D;
    for (int d = 0; d < D; ++d) store1<E>(a.out, dst + d, o[d] * inv);
  }
}

void run_item(const PagedAttentionArgs& a, const KernelConfig& c, const TilePlan& t, int kvh, int part,
              const Workspace& ws, const Partials& partials) {
  switch (a.dtype) {
    case ElemType::f32: return run_item_t<ElemType::f32>(a, c, t, kvh, part, ws, partials);
    case ElemType::f16: return run_item_t<ElemType::f16>(a, c, t, kvh, part, ws, partials);
    case ElemType::bf16: return run_item_t<ElemType::bf16>(a, c, t, kvh, part, ws, partials);
  }
}

void combine(const PagedAttentionArgs& a, const KernelConfig& c, const TilePlan& t, int kvh, const Workspace& ws,
             const Partials& partials) {
  switch (a.dtype) {
    case ElemType::f32: return combine_t<ElemType::f32>(a, c, t, kvh, ws, partials);
    case ElemType::f16: return combine_t<ElemType::f16>(a, c, t, kvh, ws, partials);
    case ElemType::bf16: return combine_t<ElemType::bf16>(a, c, t, kvh, ws, partials);
  }
}

}  // namespace

const Kernels& kernels() {
  static const Kernels k{&run_item, &combine};
  return k;
}

}  // namespace tinyfast::cpu::attn::TF_ATTN_NS
