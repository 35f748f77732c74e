// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; chosen at run
// time only when the CPU has all three).
//
// Integer dot products: _mm256_maddubs_epi16 multiplies unsigned weight codes
// by signed activation codes and adds pairs into int16 (|pair| <= 2*128*127,
// no saturation since activations are clamped to [-127, 127]); madd_epi16 with
// ones or with the sub-block scales widens to int32. Signed weights (Q8_0,
// affine8 shifted by 128) use |w| and sign(a, w).
//
// Every dot_<fmt><MT> computes MT activation rows against one weight row,
// decoding each weight block once. The operations applied to one output are
// the same for every MT, so y[m, n] is bit-identical whether row m was alone or
// inside a tile (batch invariance); kernels are compiled with -ffp-contract=off
// so the compiler cannot fuse differently in different instantiations.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

inline __m256i loadu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// sum of 4 adjacent u8*i8 products per int32 lane
inline __m256i dot_u8_i8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

inline const uint8_t* act_row(const uint8_t* acts, int64_t stride, int m) { return acts + m * stride; }

// ------------------------------------------------------------ Q4_0, Q5_0, Q8_0
// x = d*(q - c): codes are centred (q - c as int8) and multiplied with the sign
// trick. Blocks are taken in pairs whose two products are combined before the
// single add into the accumulator: one add per two blocks on the dependency
// chain instead of an FMA per block (which made these kernels latency-bound).

// The 32 high bits of a Q5_0 block as a byte mask: 0xFF where bit j of qh is set.
inline __m256i q5_high_bits(const uint8_t* qh4) {
  uint32_t qh;
  std::memcpy(&qh, qh4, 4);
  // byte j <- byte j/8 of qh (shuffle indices are per 128-bit lane; every lane holds all 4 bytes)
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int32_t>(qh)),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// A decoded weight block: signed codes q, |q|, and the fp32 scale in all lanes.
struct Dec32 {
  __m256i q, aq;
  __m256 d;
};

// fp16 scale -> 8 fp32 lanes (broadcast half, one conversion).
inline __m256 f16x8(uint16_t h) { return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<int16_t>(h))); }

// Elements 0..15 from the low nibbles (low lane), 16..31 from the high nibbles:
// the 16 bytes are broadcast to both lanes by the load itself and the high
// lane's dwords shifted by 4, so no lane insert is needed.
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  return _mm256_and_si256(_mm256_srlv_epi32(raw, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(15));
}

inline Dec32 centred(__m256i q, uint16_t d) { return {q, _mm256_sign_epi8(q, q), f16x8(d)}; }

struct Q4_0Ops {
  using Block = block_q4_0;
  static Dec32 decode(const Block& b) { return centred(_mm256_sub_epi8(nibbles_32(b.qs), _mm256_set1_epi8(8)), b.d); }
};
struct Q5_0Ops {
  using Block = block_q5_0;
  // q - 16 = lo - 16 where the fifth bit is clear, lo where it is set.
  static Dec32 decode(const Block& b) {
    const __m256i clear_bit = _mm256_andnot_si256(q5_high_bits(b.qh), _mm256_set1_epi8(-16));
    return centred(_mm256_add_epi8(nibbles_32(b.qs), clear_bit), b.d);
  }
};
struct Q8_0Ops {
  using Block = block_q8_0;
  static Dec32 decode(const Block& b) { return centred(loadu(b.qs), b.d); }  // |-128| reads as 128 unsigned
};

inline __m256 block_product(const Dec32& w, const block_q8_0a& a) {
  return _mm256_cvtepi32_ps(dot_u8_i8(w.aq, _mm256_sign_epi8(loadu(a.qs), w.q)));
}

inline __m256 block_scale(const Dec32& w, const block_q8_0a& a) { return _mm256_mul_ps(w.d, _mm256_broadcast_ss(&a.d)); }

template <class Ops, int MT>
void dot_legacy(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const typename Ops::Block*>(wrow);
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const Dec32 w0 = Ops::decode(w[b]), w1 = Ops::decode(w[b + 1]);
    for (int m = 0; m < MT; ++m) {
      const auto* a = reinterpret_cast<const block_q8_0a*>(act_row(acts, stride, m)) + b;
      const __m256 v0 = _mm256_mul_ps(block_product(w0, a[0]), block_scale(w0, a[0]));
      const __m256 v = _mm256_fmadd_ps(block_product(w1, a[1]), block_scale(w1, a[1]), v0);
      acc[m] = _mm256_add_ps(acc[m], v);
    }
  }
  if (b < nb) {
    const Dec32 w0 = Ops::decode(w[b]);
    for (int m = 0; m < MT; ++m) {
      const auto* a = reinterpret_cast<const block_q8_0a*>(act_row(acts, stride, m)) + b;
      acc[m] = _mm256_fmadd_ps(block_product(w0, a[0]), block_scale(w0, a[0]), acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = hsum(acc[m]);
}

// ------------------------------------------------------------------ Q4_K
// Per super-block: d*da * sum_j sc_j (q_j . a_j)  -  dmin*da * sum_j m_j bsum32_j.

// mask broadcasting int16 word j to every word of both lanes
inline __m256i word_bcast_mask(int j) {
  return _mm256_set1_epi16(static_cast<int16_t>((2 * j) | ((2 * j + 1) << 8)));
}

template <int MT>
void dot_q4_k(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const block_q4_K*>(wrow);
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i nib = _mm256_set1_epi8(15);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t scm[16];  // sc[0..7], m[0..7]
    unpack_q4_k_scales(w[b].scales, scm, scm + 8);
    const __m128i scm8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scm));
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm8));  // sc[0..7] in both lanes
    const __m128i mins16 = _mm_cvtepu8_epi16(_mm_srli_si128(scm8, 8));
    const float d = f16(w[b].d), dmin = f16(w[b].dmin);

    __m256i isum[MT];
    for (int m = 0; m < MT; ++m) isum[m] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu(w[b].qs + 32 * c);
      const __m256i lo = _mm256_and_si256(q, nib);                         // sub-block 2c
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nib);   // sub-block 2c+1
      const __m256i s0 = _mm256_shuffle_epi8(sc16, word_bcast_mask(2 * c));
      const __m256i s1 = _mm256_shuffle_epi8(sc16, word_bcast_mask(2 * c + 1));
      for (int m = 0; m < MT; ++m) {
        const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu(a.qs + 64 * c)), s0);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu(a.qs + 64 * c + 32)), s1);
        isum[m] = _mm256_add_epi32(isum[m], _mm256_add_epi32(p0, p1));
      }
    }
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
      const __m256i bs = loadu(a.bsums);
      const __m128i bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
      const __m128i mp = _mm_madd_epi16(mins16, bs32);
      acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(isum[m]), acc[m]);
      acc[m] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * a.d),
                                _mm256_cvtepi32_ps(_mm256_set_m128i(_mm_setzero_si128(), mp)), acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = hsum(acc[m]);
}

// ------------------------------------------------------------------ Q6_K
// Per super-block: d*da * (sum_e sc[e/16] q_e a_e  -  32 * sum_s sc_s bsum16_s), q in [0, 63].

template <int MT>
void dot_q6_k(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const block_q6_K*>(wrow);
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i nib = _mm256_set1_epi8(15), two = _mm256_set1_epi8(0x30);
  // per lane, word 2g (low lane) / 2g+1 (high lane) broadcast
  __m256i pick[4];
  for (int g = 0; g < 4; ++g) {
    const int16_t lo = static_cast<int16_t>((4 * g) | ((4 * g + 1) << 8));
    const int16_t hi = static_cast<int16_t>((4 * g + 2) | ((4 * g + 3) << 8));
    pick[g] = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
  }
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales)));
    const float d = f16(w[b].d);
    __m256i isum[MT];
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
      isum[m] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(loadu(a.bsums), sc16), 5));
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i qh = loadu(w[b].qh + 32 * h);
      const __m256i qa = loadu(w[b].ql + 64 * h);
      const __m256i qb = loadu(w[b].ql + 64 * h + 32);
      // scales 8h..8h+7 in both lanes
      // (the immediate must be a constant expression at every optimisation level)
      const __m256i sch = h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                 : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      for (int g = 0; g < 4; ++g) {
        __m256i q;
        switch (g) {
          case 0: q = _mm256_or_si256(_mm256_and_si256(qa, nib), _mm256_and_si256(_mm256_slli_epi16(qh, 4), two)); break;
          case 1: q = _mm256_or_si256(_mm256_and_si256(qb, nib), _mm256_and_si256(_mm256_slli_epi16(qh, 2), two)); break;
          case 2: q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), nib), _mm256_and_si256(qh, two)); break;
          default: q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), nib),
                                       _mm256_and_si256(_mm256_srli_epi16(qh, 2), two)); break;
        }
        // elements 32g..32g+15 of the half use scale 2g, 32g+16.. use 2g+1
        const __m256i s = _mm256_shuffle_epi8(sch, pick[g]);
        for (int m = 0; m < MT; ++m) {
          const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
          const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, loadu(a.qs + 128 * h + 32 * g)), s);
          isum[m] = _mm256_add_epi32(isum[m], p);
        }
      }
    }
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
      acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(isum[m]), acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = hsum(acc[m]);
}

// ---------------------------------------------------------------- affine
// y = sum_b scale_g*d_b * (q_b . a_b)  +  sum_g bias_g * gsum_g.

inline float bias_dot(const float* biases, const float* gsum, int64_t ng) {
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= ng; g += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(biases + g), _mm256_loadu_ps(gsum + g), acc);
  float s = hsum(acc);
  for (; g < ng; ++g) s = std::fma(biases[g], gsum[g], s);
  return s;
}

// Group index of a 64-element chunk (gs >= 64) or 32-element block, by shift:
// an integer division per chunk costs more than the chunk's arithmetic.
inline int log2_small(int v) { return v >= 4 ? 2 : v >= 2 ? 1 : 0; }

template <int MT>
void dot_affine4(const QWeightView& w, const uint8_t* wrow, const float* sf, const float* bf, const uint8_t* acts,
                 int64_t stride, float* out, int ldo) {
  const int64_t k = w.k, nfull = k / 64;
  const int gs = w.group_size;
  const int cshift = log2_small(gs / 64);  // gs 64 -> 0, 128 -> 1 (unused for gs 32)
  const AffineActs lay(k, gs);
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i nib = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  for (int64_t c = 0; c < nfull; ++c) {
    const __m256i q = loadu(wrow + 32 * c);
    const __m256i lo = _mm256_and_si256(q, nib);                        // elements 64c + 2j
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nib);  // elements 64c + 2j + 1
    const __m256 s = gs == 32 ? _mm256_set_m128(_mm_set1_ps(sf[2 * c + 1]), _mm_set1_ps(sf[2 * c]))
                              : _mm256_set1_ps(sf[c >> cshift]);
    for (int m = 0; m < MT; ++m) {
      const uint8_t* a = act_row(acts, stride, m);
      const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, loadu(a + 64 * c)),
                                           _mm256_maddubs_epi16(hi, loadu(a + 64 * c + 32)));
      const __m256 dl = _mm256_loadu_ps(reinterpret_cast<const float*>(a + lay.off_dl) + 8 * c);
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones)), _mm256_mul_ps(dl, s), acc[m]);
    }
  }
  if (k % 64) {  // trailing 32 elements: 16 code bytes, activations split 16/16
    const int64_t c = nfull;
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wrow + 32 * c));
    const __m128i nib4 = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(q, nib4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), nib4);
    const __m256 s = _mm256_set1_ps(sf[64 * c / gs]);
    for (int m = 0; m < MT; ++m) {
      const uint8_t* a = act_row(acts, stride, m);
      const __m128i p16 = _mm_add_epi16(
          _mm_maddubs_epi16(lo, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 64 * c))),
          _mm_maddubs_epi16(hi, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 64 * c + 16))));
      const __m128i p = _mm_madd_epi16(p16, _mm_set1_epi16(1));
      const __m256 dl = _mm256_loadu_ps(reinterpret_cast<const float*>(a + lay.off_dl) + 8 * c);  // lanes 4-7 are 0
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(_mm_setzero_si128(), p)), _mm256_mul_ps(dl, s),
                               acc[m]);
    }
  }
  const int64_t ng = k / gs;
  for (int m = 0; m < MT; ++m) {
    const auto* gsum = reinterpret_cast<const float*>(act_row(acts, stride, m) + lay.off_gsum);
    out[m * ldo] = hsum(acc[m]) + bias_dot(bf, gsum, ng);
  }
}

// Codes are used as q - 128 (int8, sign trick); the 128*scale that removes
// from each group is folded into the bias by tile_affine<8> (bf = bias + 128*scale).
template <int MT>
void dot_affine8(const QWeightView& w, const uint8_t* wrow, const float* sf, const float* bf, const uint8_t* acts,
                 int64_t stride, float* out, int ldo) {
  const int64_t k = w.k;
  const int gs = w.group_size;
  const int bshift = log2_small(gs / 32);
  const AffineActs lay(k, gs);
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  auto decode = [&](int64_t b) {
    const __m256i q = _mm256_xor_si256(loadu(wrow + 32 * b), flip);  // q - 128 as int8
    return Dec32{q, _mm256_sign_epi8(q, q), _mm256_broadcast_ss(sf + (b >> bshift))};
  };
  auto product = [&](const Dec32& wd, const uint8_t* a, int64_t b) {
    const __m256 p = _mm256_cvtepi32_ps(dot_u8_i8(wd.aq, _mm256_sign_epi8(loadu(a + 32 * b), wd.q)));
    return std::pair{p, _mm256_mul_ps(wd.d, _mm256_broadcast_ss(reinterpret_cast<const float*>(a + lay.off_d) + b))};
  };
  const int64_t nb = k / 32;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {  // pairs, as in dot_legacy
    const Dec32 w0 = decode(b), w1 = decode(b + 1);
    for (int m = 0; m < MT; ++m) {
      const uint8_t* a = act_row(acts, stride, m);
      const auto [p0, s0] = product(w0, a, b);
      const auto [p1, s1] = product(w1, a, b + 1);
      acc[m] = _mm256_add_ps(acc[m], _mm256_fmadd_ps(p1, s1, _mm256_mul_ps(p0, s0)));
    }
  }
  if (b < nb) {
    const Dec32 w0 = decode(b);
    for (int m = 0; m < MT; ++m) {
      const auto [p0, s0] = product(w0, act_row(acts, stride, m), b);
      acc[m] = _mm256_fmadd_ps(p0, s0, acc[m]);
    }
  }
  const int64_t ng = k / gs;
  for (int m = 0; m < MT; ++m) {
    const auto* gsum = reinterpret_cast<const float*>(act_row(acts, stride, m) + lay.off_gsum);
    out[m * ldo] = hsum(acc[m]) + bias_dot(bf, gsum, ng);
  }
}

// ----------------------------------------------------------------- tiles

template <QType T, int MT>
void gguf_dot(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  if constexpr (T == QType::Q4_0) dot_legacy<Q4_0Ops, MT>(wrow, acts, stride, nb, out, ldo);
  else if constexpr (T == QType::Q5_0) dot_legacy<Q5_0Ops, MT>(wrow, acts, stride, nb, out, ldo);
  else if constexpr (T == QType::Q8_0) dot_legacy<Q8_0Ops, MT>(wrow, acts, stride, nb, out, ldo);
  else if constexpr (T == QType::Q4_K) dot_q4_k<MT>(wrow, acts, stride, nb, out, ldo);
  else dot_q6_k<MT>(wrow, acts, stride, nb, out, ldo);
}

template <QType T, int MT>
void rows_gguf(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, float* res) {
  const int64_t rb = w.row_bytes();
  const int64_t nb = w.k / qtype_info(T).block_elems;
  for (int j = 0; j < nn; ++j) gguf_dot<T, MT>(w.data + (n0 + j) * rb, acts, stride, nb, res + j, nn);
}

// The switch on the tile height sits outside the row loop so each row loop
// is one straight-line instantiation (vector constants hoisted out of it).
template <QType T>
void tile_gguf(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, int mm, float* res) {
  switch (mm) {
    case 1: rows_gguf<T, 1>(w, acts, stride, n0, nn, res); break;
    case 2: rows_gguf<T, 2>(w, acts, stride, n0, nn, res); break;
    case 3: rows_gguf<T, 3>(w, acts, stride, n0, nn, res); break;
    default: rows_gguf<T, 4>(w, acts, stride, n0, nn, res); break;
  }
}

// One weight row's scales or biases to fp32.
void row_to_f32(const void* src, FType t, int64_t offset, int64_t count, float* dst) {
  int64_t i = 0;
  switch (t) {
    case FType::F32:
      std::memcpy(dst, static_cast<const float*>(src) + offset, static_cast<size_t>(count) * 4);
      return;
    case FType::F16: {
      const uint16_t* h = static_cast<const uint16_t*>(src) + offset;
      for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
      for (; i < count; ++i) dst[i] = f16(h[i]);
      return;
    }
    case FType::BF16: {
      const uint16_t* h = static_cast<const uint16_t*>(src) + offset;
      for (; i + 8 <= count; i += 8) {
        const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
      }
      for (; i < count; ++i) dst[i] = bf16_to_fp32(h[i]);
      return;
    }
  }
}

template <int Bits>
void tile_affine(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, int mm, float* res) {
  const int64_t ng = w.k / w.group_size, rb = w.row_bytes();
  thread_local std::vector<float> sb;
  if (sb.size() < static_cast<size_t>(2 * ng)) sb.resize(2 * ng);
  float* sf = sb.data();
  float* bf = sb.data() + ng;
  for (int j = 0; j < nn; ++j) {
    const int64_t n = n0 + j;
    row_to_f32(w.scales, w.scale_type, n * ng, ng, sf);
    row_to_f32(w.biases, w.scale_type, n * ng, ng, bf);
    if constexpr (Bits == 8) {
      for (int64_t g = 0; g < ng; ++g) bf[g] += 128.0f * sf[g];
    }
    const uint8_t* wrow = w.data + n * rb;
    auto run = [&](auto mt) {
      constexpr int MT = decltype(mt)::value;
      if constexpr (Bits == 4) dot_affine4<MT>(w, wrow, sf, bf, acts, stride, res + j, nn);
      else dot_affine8<MT>(w, wrow, sf, bf, acts, stride, res + j, nn);
    };
    switch (mm) {
      case 1: run(std::integral_constant<int, 1>{}); break;
      case 2: run(std::integral_constant<int, 2>{}); break;
      case 3: run(std::integral_constant<int, 3>{}); break;
      default: run(std::integral_constant<int, 4>{}); break;
    }
  }
}

// ------------------------------------------------------------ activations

void to_f32_avx2(const void* x, FType t, int64_t k, float* out) { row_to_f32(x, t, 0, k, out); }

// Same arithmetic as quantize_row_scalar: amax (NaN ignored), d = amax/127,
// codes = round-half-even(x * (127/amax)) clamped to [-127, 127] (NaN -> -127).
void quantize_row_avx2(const float* x, int64_t k, int block, int8_t* qs, float* d, int16_t* sums16) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < k / block; ++b) {
    const float* xb = x + b * block;
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < block; i += 8) mx = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)), mx);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const bool zero = !(amax >= kTinyAmax);
    const __m256 id = _mm256_set1_ps(zero ? 0.0f : 127.0f / amax);
    d[b] = zero ? 0.0f : amax / 127.0f;
    for (int i = 0; i < block; i += 32) {
      __m256i v[4];
      for (int u = 0; u < 4; ++u) {
        __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * u), id),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);  // max(NaN, lo) = lo
        v[u] = _mm256_cvtps_epi32(r);
      }
      const __m256i p16 = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * block + i), _mm256_permutevar8x32_epi32(p16, order));
    }
  }
  for (int64_t s = 0; s < k / 16; ++s) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += qs[s * 16 + i];
    sums16[s] = static_cast<int16_t>(sum);
  }
}

}  // namespace

const IsaKernels* avx2_kernels() {
  static const IsaKernels k = {
      KernelLevel::AVX2,
      to_f32_avx2,
      quantize_row_avx2,
      {tile_gguf<QType::Q4_0>, tile_gguf<QType::Q5_0>, tile_gguf<QType::Q8_0>, tile_gguf<QType::Q4_K>,
       tile_gguf<QType::Q6_K>, tile_affine<4>, tile_affine<8>},
  };
  return &k;
}

}  // namespace tinyfast::cpu::qk

#else  // not x86-64: no AVX2 kernels in this build

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk {
const IsaKernels* avx2_kernels() { return nullptr; }
}  // namespace tinyfast::cpu::qk

#endif
