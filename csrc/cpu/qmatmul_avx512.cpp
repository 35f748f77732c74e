// AVX-512 VNNI kernels (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni -mfma -mf16c on this file only; chosen at run time only when
// the CPU has all of them and AVX2).
//
// _mm512_dpbusd_epi32 multiplies unsigned weight bytes by signed activation
// bytes and adds each 4 products into an int32 lane in one instruction: no
// int16 intermediate (maddubs) to saturate and no widening madd. 512-bit
// registers take 64 elements at once: two 32-element blocks for Q4_0/Q5_0/
// Q8_0/affine8, two 32-element sub-blocks (Q4_K) or four 16-element ones (Q6_K).
// Signed weights (the centred legacy formats) use |w| and a with w's sign, the
// sign applied by a masked subtract (AVX-512 has no vpsignb on zmm).
//
// Scales of K-quant sub-blocks are applied in integers with _mm512_madd_epi16
// or, accumulating, _mm512_dpwssd_epi32 (VNNI int16): each dpbusd lane sum
// fits int16 (Q4_K: 4*15*127, Q6_K: 4*63*127 < 32768), so reading the int32
// lane as (low int16, high int16) against (scale, 0) gives lane*scale exactly.
//
// Contract as for AVX2: each dot_<fmt><MT> applies the same operations to an
// output for every MT (batch invariance), -ffp-contract=off, activations
// quantized by the AVX2 quantizer (bytes shared with every level). K-quant and
// affine8 tiles take up to 8 rows of x (AVX2: 4). affine4 uses the AVX2 tile, 4 rows at a time
// (an AVX-512 affine4 kernel is not written yet).
//
// Linker hazard: everything here is in namespace avx512 and in an anonymous
// namespace, and no standard-library template or header inline function is
// odr-used, so no weak symbol compiled with AVX-512 can be chosen by the linker
// for baseline callers (tests/kernels/test_qmatmul_avx512.py checks the object).
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__)

// GCC 12's AVX-512 headers build their "undefined" operands as `__Y = __Y`,
// which -Wall -O3 reports as (maybe-)uninitialized at every inlined use.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk::avx512 {
namespace {

inline const uint8_t* act_row(const uint8_t* acts, int64_t stride, int m) { return acts + m * stride; }

inline __m256i loadu256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m512i loadu512(const void* p) { return _mm512_loadu_si512(p); }

// Two 32-byte halves into one zmm (low, high).
inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

inline __m512i dot(__m512i u8, __m512i s8) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u8, s8); }

// ------------------------------------------------------------ Q4_0, Q5_0, Q8_0
// Two blocks per zmm (block b in bytes 0-31, b+1 in 32-63). x = d*(q - c):
// codes are centred in int8; the dot uses |q| and the activations negated where
// q < 0. (Feeding the unsigned codes and subtracting c*qsum in one lane per
// block was tried: the integers stay exact, but that lane and the others then
// hold large partial sums of opposite sign whose fp32 products cancel, and the
// error left the derived bound (q4_0, 4e-5 relative); it was not faster either.) One fp32 FMA per block pair: lanes 0-7 carry block b's products and
// scale, lanes 8-15 block b+1's.

struct Dec64 {
  __m512i aq;     // |q| as unsigned bytes (|-128| reads as 128)
  __mmask64 neg;  // q < 0
};

// fp16 scales of two blocks -> 8 lanes each.
inline __m512 f16_pair(uint16_t h0, uint16_t h1) {
  const __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(static_cast<int16_t>(h0))),
                                            _mm_set1_epi16(static_cast<int16_t>(h1)), 1);
  return _mm512_cvtph_ps(h);
}

inline Dec64 centred(__m512i q) { return {_mm512_abs_epi8(q), _mm512_movepi8_mask(q)}; }

// 32 nibble codes of each block: elements 0-15 are the low nibbles, 16-31 the
// high nibbles; each 16-byte qs is broadcast to two 128-bit lanes and the
// second lane shifted by 4.
inline __m512i nibbles_64(const uint8_t* qs0, const uint8_t* qs1) {
  const __m256i r0 = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs0)));
  const __m256i r1 = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs1)));
  const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
  return _mm512_and_si512(_mm512_srlv_epi32(join(r0, r1), shift), _mm512_set1_epi8(15));
}

// decode: the centred codes q - c as |q - c| and a sign mask (tiles of several
// rows of x); decode_unsigned: the stored codes q themselves (the matvec below).
struct Q4_0Ops {
  using Block = block_q4_0;
  static constexpr int kC = 8;
  static Dec64 decode(const Block& b0, const Block& b1) {
    return centred(_mm512_sub_epi8(nibbles_64(b0.qs, b1.qs), _mm512_set1_epi8(8)));
  }
  static __m512i decode_unsigned(const Block& b0, const Block& b1) { return nibbles_64(b0.qs, b1.qs); }
};
struct Q5_0Ops {
  using Block = block_q5_0;
  static constexpr int kC = 16;
  static uint64_t fifth_bits(const Block& b0, const Block& b1) {  // bit j of qh: element j
    uint32_t h0, h1;
    __builtin_memcpy(&h0, b0.qh, 4);
    __builtin_memcpy(&h1, b1.qh, 4);
    return static_cast<uint64_t>(h1) << 32 | h0;
  }
  // q - 16 = lo - 16 where the fifth bit is clear, lo where set.
  static Dec64 decode(const Block& b0, const Block& b1) {
    const __m512i lo = nibbles_64(b0.qs, b1.qs);
    return centred(_mm512_mask_sub_epi8(lo, _cvtu64_mask64(~fifth_bits(b0, b1)), lo, _mm512_set1_epi8(16)));
  }
  static __m512i decode_unsigned(const Block& b0, const Block& b1) {
    const __m512i lo = nibbles_64(b0.qs, b1.qs);
    return _mm512_mask_add_epi8(lo, _cvtu64_mask64(fifth_bits(b0, b1)), lo, _mm512_set1_epi8(16));
  }
};
struct Q8_0Ops {
  using Block = block_q8_0;
  static constexpr int kC = 128;  // the int8 code + 128 as an unsigned byte
  static Dec64 decode(const Block& b0, const Block& b1) {
    return centred(join(loadu256(b0.qs), loadu256(b1.qs)));
  }
  static __m512i decode_unsigned(const Block& b0, const Block& b1) {
    return _mm512_xor_si512(join(loadu256(b0.qs), loadu256(b1.qs)), _mm512_set1_epi8(static_cast<char>(0x80)));
  }
};

// Lane products of a weight pair with activation blocks a0, a1 (int32, 8 lanes per block).
inline __m512i pair_dot(const Dec64& w, const block_q8_0a& a0, const block_q8_0a& a1) {
  const __m512i x = join(loadu256(a0.qs), loadu256(a1.qs));
  return dot(w.aq, _mm512_mask_sub_epi8(x, w.neg, _mm512_setzero_si512(), x));
}

// fp16 scales of blocks w[0..3] -> 4 fp32 lanes each, from two loads and one
// permute (Block's d is its first field; no load reaches past block 3).
template <class Block>
inline __m512 quad_weight_scales(const Block* w) {
  constexpr int h = sizeof(Block) / 2;  // halves per block
  if constexpr (h < 16) {
    static_assert(2 * sizeof(Block) + 32 <= 4 * sizeof(Block));
    const __m256i idx = _mm256_setr_epi16(0, 0, 0, 0, h, h, h, h, 16, 16, 16, 16, 16 + h, 16 + h, 16 + h, 16 + h);
    return _mm512_cvtph_ps(_mm256_permutex2var_epi16(loadu256(w), idx, loadu256(w + 2)));
  } else {
    static_assert(2 * sizeof(Block) + 64 <= 4 * sizeof(Block));
    const __m512i idx = _mm512_setr_epi32(0, 0, h | h << 16, h | h << 16, 32 | 32 << 16, 32 | 32 << 16,
                                          (32 + h) | (32 + h) << 16, (32 + h) | (32 + h) << 16, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(loadu512(w), idx, loadu512(w + 2))));
  }
}

// Activation scales of blocks a[0..3] -> 4 lanes each (d sits 10 floats apart;
// the second load ends 16 bytes before the end of block 3).
inline __m512 quad_act_scales(const block_q8_0a* a) {
  static_assert(sizeof(block_q8_0a) == 40);
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 10, 10, 10, 10, 16, 16, 16, 16, 26, 26, 26, 26);
  return _mm512_permutex2var_ps(_mm512_loadu_ps(&a[0].d), idx, _mm512_loadu_ps(&a[2].d));
}

// The last nb % 4 blocks (a pair and/or a single block) of a row, accumulated
// into acc with 8-lane scale groups.
template <class Ops, int MT>
inline void legacy_tail(const typename Ops::Block* w, const uint8_t* acts, int64_t stride, int64_t b, int64_t nb,
                        __m512 (&acc)[MT]) {
  if (b + 2 <= nb) {
    const Dec64 wd = Ops::decode(w[b], w[b + 1]);
    const __m512 dw = f16_pair(w[b].d, w[b + 1].d);
    for (int m = 0; m < MT; ++m) {
      const auto* a = reinterpret_cast<const block_q8_0a*>(act_row(acts, stride, m)) + b;
      const __m512 da = _mm512_castpd_ps(_mm512_insertf64x4(
          _mm512_castps_pd(_mm512_set1_ps(a[0].d)), _mm256_castps_pd(_mm256_set1_ps(a[1].d)), 1));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair_dot(wd, a[0], a[1])), _mm512_mul_ps(dw, da), acc[m]);
    }
    b += 2;
  }
  if (b < nb) {
    // An odd last block, paired with itself; only lanes 0-7 are accumulated
    // (masked, not zero-scaled: an inf/NaN fp16 scale times 0 is NaN).
    const Dec64 wd = Ops::decode(w[b], w[b]);
    const __m512 dw = f16_pair(w[b].d, w[b].d);
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_0a*>(act_row(acts, stride, m))[b];
      acc[m] = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(pair_dot(wd, a, a)), _mm512_mul_ps(dw, _mm512_set1_ps(a.d)),
                                     acc[m], 0x00ff);
    }
  }
}

// Main loop: four blocks per step. The two pair products are folded to 4
// lanes per block (adjacent lanes added, exact in int32) so one conversion and
// one FMA with 4-lane scale groups serve four blocks; legacy_tail does the rest.
template <class Ops, int MT>
void dot_legacy(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const typename Ops::Block*>(wrow);
  __m512 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    const Dec64 w01 = Ops::decode(w[b], w[b + 1]), w23 = Ops::decode(w[b + 2], w[b + 3]);
    const __m512 dw = quad_weight_scales(w + b);
    for (int m = 0; m < MT; ++m) {
      const auto* a = reinterpret_cast<const block_q8_0a*>(act_row(acts, stride, m)) + b;
      const __m512i p01 = pair_dot(w01, a[0], a[1]), p23 = pair_dot(w23, a[2], a[3]);
      const __m512i p = _mm512_add_epi32(_mm512_permutex2var_epi32(p01, even, p23),
                                         _mm512_permutex2var_epi32(p01, odd, p23));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, quad_act_scales(a)), acc[m]);
    }
  }
  legacy_tail<Ops, MT>(w, acts, stride, b, nb, acc);
  for (int m = 0; m < MT; ++m) out[m * ldo] = _mm512_reduce_add_ps(acc[m]);
}

// Prepared activations. Per weight row, the step above spends most of its
// instructions on activation work (two joins and a scale permute per four
// blocks and row of x) and sign handling (abs, sign mask and masked negation
// per weight pair and row of x). rows_gguf instead lays each row of x out once
// per tile in PreparedQuad steps (joined pairs, scales in lanes) with the dot
// products' starting values -c*sum(a) per lane precomputed, and the weights
// enter as their stored unsigned codes: dpbusd(-c*sum(a), q, a) = (q - c).a
// lane by lane, the same int32 lanes as the signed form, followed by the same
// fold, scale products and FMAs - bit-identical to dot_legacy (which remains
// for rows longer than the stack buffer).
struct PreparedQuad {
  __m512i x01, x23;  // activation codes of blocks 4q, 4q+1 and 4q+2, 4q+3
  __m512i n01, n23;  // -c * (sum of the 4 codes) per int32 lane
  __m512 da;         // activation scales, 4 lanes per block
};
// The prepared rows are read again for every weight row. With one row of x
// they must stay in L1 (320 bytes per 136 weight bytes of Q8_0: from L2 they
// cost more than the weights; k = 14336 Q8_0 matvec 0.9x of AVX2 instead of
// 1.1x); with several rows of x there is enough arithmetic per byte to read
// them from L2 (k = 4096 Q5_0, 8 rows: 1.5x of AVX2 prepared, 1.35x without),
// up to a point (k = 14336 Q8_0, 4 rows: 143 KB prepared 0.97x, without 1.1x).
// Longer rows use dot_legacy.
constexpr int64_t kPreparedBytesMatvec = 24 << 10, kPreparedBytesTile = 96 << 10;
// Matvec rows are fetched this many rows ahead (tiles of one thread are not
// contiguous, so the hardware prefetcher restarts at each; measured +0-8 %).
constexpr int kPrefetchRows = 4;
constexpr int64_t kPrefetchRowBytes = 4096;  // longer rows are long enough streams for the hardware

template <class Ops>
inline void prepare_acts(const uint8_t* acts, int64_t nq, PreparedQuad* out) {
  const auto* a = reinterpret_cast<const block_q8_0a*>(acts);
  const __m512i c = _mm512_set1_epi8(static_cast<char>(Ops::kC));
  for (int64_t q = 0; q < nq; ++q, a += 4) {
    PreparedQuad& o = out[q];
    o.x01 = join(loadu256(a[0].qs), loadu256(a[1].qs));
    o.x23 = join(loadu256(a[2].qs), loadu256(a[3].qs));
    o.n01 = _mm512_sub_epi32(_mm512_setzero_si512(), dot(c, o.x01));
    o.n23 = _mm512_sub_epi32(_mm512_setzero_si512(), dot(c, o.x23));
    o.da = quad_act_scales(a);
  }
}

// qa holds MT rows of x, nq steps each (row m at qa + m * nq).
template <class Ops, int MT>
void dot_legacy_prepared(const uint8_t* wrow, const PreparedQuad* qa, int64_t nq, const uint8_t* acts,
                         int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const typename Ops::Block*>(wrow);
  __m512 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t q = 0; q < nq; ++q) {
    const int64_t b = 4 * q;
    const __m512i u01 = Ops::decode_unsigned(w[b], w[b + 1]), u23 = Ops::decode_unsigned(w[b + 2], w[b + 3]);
    const __m512 dw = quad_weight_scales(w + b);
    for (int m = 0; m < MT; ++m) {
      const PreparedQuad& a = qa[m * nq + q];
      const __m512i p01 = _mm512_dpbusd_epi32(a.n01, u01, a.x01), p23 = _mm512_dpbusd_epi32(a.n23, u23, a.x23);
      const __m512i p = _mm512_add_epi32(_mm512_permutex2var_epi32(p01, even, p23),
                                         _mm512_permutex2var_epi32(p01, odd, p23));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, a.da), acc[m]);
    }
  }
  legacy_tail<Ops, MT>(w, acts, stride, 4 * nq, nb, acc);
  for (int m = 0; m < MT; ++m) out[m * ldo] = _mm512_reduce_add_ps(acc[m]);
}

// ------------------------------------------------------------------ Q4_K
// Per super-block: d*da * sum_j sc_j (q_j . a_j)  -  dmin*da * sum_j m_j bsum32_j.
// Chunk c (32 code bytes) holds sub-block 2c in its low nibbles and 2c+1 in
// its high nibbles, and activation bytes 64c..64c+63 are exactly those two
// sub-blocks: one zmm of codes meets one 64-byte activation load.

// Q4_K's 12 scale bytes -> sc[0..7] in bytes 0-7, m[0..7] in bytes 8-15 (see
// unpack_q4_k_scales in qmatmul_internal.h; a local copy keeps this object
// free of header inline functions).
inline __m128i q4_k_scales(const uint8_t* s) {
  uint32_t w0, w1, w2;
  __builtin_memcpy(&w0, s, 4);
  __builtin_memcpy(&w1, s + 4, 4);
  __builtin_memcpy(&w2, s + 8, 4);
  const uint32_t sc_lo = w0 & 0x3f3f3f3fu;
  const uint32_t m_lo = w1 & 0x3f3f3f3fu;
  const uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);
  const uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(m_lo),
                        static_cast<int>(m_hi));
}

template <int MT>
void dot_q4_k(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const block_q4_K*>(wrow);
  __m512 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  const __m512i nib = _mm512_set1_epi8(15);
  const __m512i half_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  for (int64_t b = 0; b < nb; ++b) {
    const __m128i scm8 = q4_k_scales(w[b].scales);
    const __m512i sc32 = _mm512_cvtepu8_epi32(scm8);  // lanes 0-7 sc, 8-15 m
    // m[j] twice per 32-element sub-block: one madd with the 16 activation sums of 16
    const __m128i mb = _mm_srli_si128(scm8, 8);
    const __m256i mins2 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mb, mb));
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(w[b].d)), dmin = _mm512_set1_ps(_cvtsh_ss(w[b].dmin));

    __m512i u[4], sc[4];
    for (int c = 0; c < 4; ++c) {
      const __m512i q = _mm512_broadcast_i64x4(loadu256(w[b].qs + 32 * c));
      u[c] = _mm512_and_si512(_mm512_srlv_epi64(q, half_shift), nib);  // sub-block 2c | 2c+1
      const __m512i idx = _mm512_setr_epi32(2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c + 1,
                                            2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1,
                                            2 * c + 1);
      sc[c] = _mm512_permutexvar_epi32(idx, sc32);
    }
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
      __m512i isum = _mm512_madd_epi16(dot(u[0], loadu512(a.qs)), sc[0]);
      for (int c = 1; c < 4; ++c) isum = _mm512_dpwssd_epi32(isum, dot(u[c], loadu512(a.qs + 64 * c)), sc[c]);
      const __m256i mp = _mm256_madd_epi16(mins2, loadu256(a.bsums));  // |m*bsum| sums fit int32
      // scales as vector products with a.d broadcast from memory (no shuffle per row)
      const __m512 da = _mm512_set1_ps(a.d);
      acc[m] = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(isum), acc[m]);
      acc[m] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(_mm512_zextsi256_si512(mp)), acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = _mm512_reduce_add_ps(acc[m]);
}

// ------------------------------------------------------------------ Q6_K
// Per super-block: d*da * (sum_e sc[e/16] q_e a_e  -  32 * sum_s sc_s bsum16_s), q in [0, 63].
// Half h: ql[64h..64h+63] low nibbles are groups 0|1 (elements 0-63 of the
// half), high nibbles groups 2|3; qh[32h..] bits 0-1, 2-3, 4-5, 6-7 are the
// top two bits of groups 0, 1, 2, 3.

template <int MT>
void dot_q6_k(const uint8_t* wrow, const uint8_t* acts, int64_t stride, int64_t nb, float* out, int ldo) {
  const auto* w = reinterpret_cast<const block_q6_K*>(wrow);
  __m512 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  const __m512i nib = _mm512_set1_epi8(15), top = _mm512_set1_epi8(0x30);
  // groups 0|1 want qh<<4 | qh<<2 in bit 4-5; groups 2|3 qh | qh>>2
  const __m512i shl01 = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
  const __m512i shr23 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  for (int64_t b = 0; b < nb; ++b) {
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales));
    // int32 lanes (scale as int16, 0): madd_epi16 multiplies the lane by the scale
    const __m512i sc32 = _mm512_and_si512(_mm512_cvtepi8_epi32(sc8), _mm512_set1_epi32(0xffff));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(w[b].d));
    __m512i u[4], sc[4];
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = loadu512(w[b].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(loadu256(w[b].qh + 32 * h));
      u[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, nib), _mm512_and_si512(_mm512_sllv_epi64(qh, shl01), top));
      u[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi64(ql, 4), nib),
                                     _mm512_and_si512(_mm512_srlv_epi64(qh, shr23), top));
    }
    for (int z = 0; z < 4; ++z) {  // lane i of zmm z covers elements 64z+4i..: scale 4z + i/4
      const int s = 4 * z;
      const __m512i idx = _mm512_setr_epi32(s, s, s, s, s + 1, s + 1, s + 1, s + 1, s + 2, s + 2, s + 2, s + 2,
                                            s + 3, s + 3, s + 3, s + 3);
      sc[z] = _mm512_permutexvar_epi32(idx, sc32);
    }
    for (int m = 0; m < MT; ++m) {
      const auto& a = reinterpret_cast<const block_q8_K*>(act_row(acts, stride, m))[b];
      const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(loadu256(a.bsums), sc16), 5);
      __m512i isum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(corr));
      for (int z = 0; z < 4; ++z) isum = _mm512_dpwssd_epi32(isum, dot(u[z], loadu512(a.qs + 64 * z)), sc[z]);
      acc[m] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(a.d)), _mm512_cvtepi32_ps(isum), acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m * ldo] = _mm512_reduce_add_ps(acc[m]);
}

// ---------------------------------------------------------------- affine8
// y = sum_b scale_g*d_b * ((q - 128) . a_b)  +  sum_g (bias_g + 128*scale_g) * gsum_g,
// as in the AVX2 file. Codes are contiguous (32 bytes per block), so a block
// pair is one 64-byte load; the quad step, folding and sign handling are the
// legacy ones above.

// Activation layout offsets (AffineActs in qmatmul_internal.h, recomputed here:
// its inline constructor would be a weak symbol of this object).
struct Affine8Offsets {
  int64_t d, gsum;
};
inline int64_t round64(int64_t v) { return (v + 63) / 64 * 64; }
inline Affine8Offsets affine8_offsets(int64_t k) {
  const int64_t nb = k / 32;
  const int64_t d = round64(k), qsum = d + round64(nb * 4);
  return {d, qsum + round64(nb * 4)};
}

inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// One weight row's scales or biases to fp32.
void row_to_f32(const void* src, FType t, int64_t offset, int64_t count, float* dst) {
  int64_t i = 0;
  if (t == FType::F32) {
    __builtin_memcpy(dst, static_cast<const float*>(src) + offset, static_cast<size_t>(count) * 4);
    return;
  }
  const uint16_t* h = static_cast<const uint16_t*>(src) + offset;
  for (; i + 16 <= count; i += 16) {
    const __m256i v = loadu256(h + i);
    _mm512_storeu_ps(dst + i, t == FType::F16 ? _mm512_cvtph_ps(v)
                                              : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)));
  }
  for (; i < count; ++i) dst[i] = t == FType::F16 ? _cvtsh_ss(h[i]) : bf16_bits_to_f32(h[i]);
}

inline float bias_dot(const float* bf, const float* gsum, int64_t ng) {
  __m512 acc = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + 16 <= ng; g += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(bf + g), _mm512_loadu_ps(gsum + g), acc);
  if (g < ng) {
    const __mmask16 live = static_cast<__mmask16>((1u << (ng - g)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(live, bf + g), _mm512_maskz_loadu_ps(live, gsum + g), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

inline Dec64 affine8_pair(const uint8_t* codes) {
  return centred(_mm512_xor_si512(loadu512(codes), _mm512_set1_epi8(static_cast<char>(0x80))));
}

// Scaled product of one pair (8 lanes per block) or of a block alone (lanes 0-7).
inline __m512i signed_dot(const Dec64& w, __m512i x) {
  return dot(w.aq, _mm512_mask_sub_epi8(x, w.neg, _mm512_setzero_si512(), x));
}

template <int MT>
void dot_affine8(int64_t k, int bshift, const uint8_t* wrow, const float* sf, const float* bf, const uint8_t* acts,
                 int64_t stride, const Affine8Offsets& off, int64_t ng, float* out, int ldo) {
  const int64_t nb = k / 32;
  __m512 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i by4 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  // scale of block b+i relative to sf[b >> bshift] (b is a multiple of 4), 4 lanes each
  const __m512i s_idx = _mm512_srlv_epi32(by4, _mm512_set1_epi32(bshift));
  const __mmask16 s_need = static_cast<__mmask16>((1u << (4 >> bshift)) - 1);
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    const Dec64 w01 = affine8_pair(wrow + 32 * b), w23 = affine8_pair(wrow + 32 * b + 64);
    const __m512 dw = _mm512_permutexvar_ps(s_idx, _mm512_maskz_loadu_ps(s_need, sf + (b >> bshift)));
    for (int m = 0; m < MT; ++m) {
      const uint8_t* a = act_row(acts, stride, m);
      const __m512i p01 = signed_dot(w01, loadu512(a + 32 * b)), p23 = signed_dot(w23, loadu512(a + 32 * b + 64));
      const __m512i p = _mm512_add_epi32(_mm512_permutex2var_epi32(p01, even, p23),
                                         _mm512_permutex2var_epi32(p01, odd, p23));
      const float* d = reinterpret_cast<const float*>(a + off.d) + b;
      const __m512 da = _mm512_permutexvar_ps(by4, _mm512_maskz_loadu_ps(0x000f, d));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, da), acc[m]);
    }
  }
  if (b + 2 <= nb) {
    const Dec64 wd = affine8_pair(wrow + 32 * b);
    const __m512 dw = _mm512_mask_mov_ps(_mm512_set1_ps(sf[b >> bshift]), 0xff00, _mm512_set1_ps(sf[(b + 1) >> bshift]));
    for (int m = 0; m < MT; ++m) {
      const uint8_t* a = act_row(acts, stride, m);
      const float* d = reinterpret_cast<const float*>(a + off.d) + b;
      const __m512 da = _mm512_mask_mov_ps(_mm512_set1_ps(d[0]), 0xff00, _mm512_set1_ps(d[1]));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(signed_dot(wd, loadu512(a + 32 * b))), _mm512_mul_ps(dw, da), acc[m]);
    }
    b += 2;
  }
  if (b < nb) {  // last block alone in lanes 0-7
    const __m512i q = _mm512_xor_si512(_mm512_zextsi256_si512(loadu256(wrow + 32 * b)),
                                       _mm512_set1_epi8(static_cast<char>(0x80)));
    const Dec64 wd = centred(q);
    const __m512 dw = _mm512_set1_ps(sf[b >> bshift]);
    for (int m = 0; m < MT; ++m) {
      const uint8_t* a = act_row(acts, stride, m);
      const float* d = reinterpret_cast<const float*>(a + off.d) + b;
      const __m512i x = _mm512_zextsi256_si512(loadu256(a + 32 * b));
      acc[m] = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(signed_dot(wd, x)), _mm512_mul_ps(dw, _mm512_set1_ps(d[0])),
                                     acc[m], 0x00ff);
    }
  }
  for (int m = 0; m < MT; ++m) {
    const auto* gsum = reinterpret_cast<const float*>(act_row(acts, stride, m) + off.gsum);
    out[m * ldo] = _mm512_reduce_add_ps(acc[m]) + bias_dot(bf, gsum, ng);
  }
}

TileFn g_avx2_affine4 = nullptr, g_avx2_affine8 = nullptr;

// An AVX2 tile (at most 4 rows of x) over up to 8 rows: two calls, the second
// writing rows 4.. of res. Each output's arithmetic is the AVX2 tile's.
void avx2_tile_halves(TileFn tile, const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn,
                      int mm, float* res) {
  tile(w, acts, stride, n0, nn, mm < 4 ? mm : 4, res);
  if (mm > 4) tile(w, acts + 4 * stride, stride, n0, nn, mm - 4, res + 4 * nn);
}

void tile_affine4(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, int mm, float* res) {
  avx2_tile_halves(g_avx2_affine4, w, acts, stride, n0, nn, mm, res);
}

void tile_affine8(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, int mm, float* res) {
  constexpr int64_t kMaxGroups = 2048;  // 16 KB of scales + biases on the stack
  const int64_t ng = w.k / w.group_size;
  // rows with more groups than the stack buffers hold: the AVX2 tile
  if (ng > kMaxGroups) return avx2_tile_halves(g_avx2_affine8, w, acts, stride, n0, nn, mm, res);
  alignas(64) float sf[kMaxGroups], bf[kMaxGroups];
  const int bshift = w.group_size == 32 ? 0 : w.group_size == 64 ? 1 : 2;
  const Affine8Offsets off = affine8_offsets(w.k);
  for (int j = 0; j < nn; ++j) {
    const int64_t n = n0 + j;
    row_to_f32(w.scales, w.scale_type, n * ng, ng, sf);
    row_to_f32(w.biases, w.scale_type, n * ng, ng, bf);
    for (int64_t g = 0; g < ng; ++g) bf[g] += 128.0f * sf[g];  // same fp32 ops as the AVX2 tile
    const uint8_t* wrow = w.data + n * w.k;
#define TF_AFFINE8(MT) dot_affine8<MT>(w.k, bshift, wrow, sf, bf, acts, stride, off, ng, res + j, nn)
    switch (mm) {
      case 1: TF_AFFINE8(1); break;
      case 2: TF_AFFINE8(2); break;
      case 3: TF_AFFINE8(3); break;
      case 4: TF_AFFINE8(4); break;
      case 5: TF_AFFINE8(5); break;
      case 6: TF_AFFINE8(6); break;
      case 7: TF_AFFINE8(7); break;
      default: TF_AFFINE8(8); break;
    }
#undef TF_AFFINE8
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

// Row bytes and blocks per row from the format's block geometry (qtype_info
// lives in the baseline object; these are plain constants).
template <QType T>
constexpr int64_t block_elems() {
  return T == QType::Q4_K || T == QType::Q6_K ? 256 : 32;
}
template <QType T>
constexpr int64_t block_bytes() {
  if constexpr (T == QType::Q4_0) return sizeof(block_q4_0);
  else if constexpr (T == QType::Q5_0) return sizeof(block_q5_0);
  else if constexpr (T == QType::Q8_0) return sizeof(block_q8_0);
  else if constexpr (T == QType::Q4_K) return sizeof(block_q4_K);
  else return sizeof(block_q6_K);
}

template <QType T>
struct LegacyOps;
template <>
struct LegacyOps<QType::Q4_0> { using type = Q4_0Ops; };
template <>
struct LegacyOps<QType::Q5_0> { using type = Q5_0Ops; };
template <>
struct LegacyOps<QType::Q8_0> { using type = Q8_0Ops; };

template <QType T, int MT>
void rows_gguf(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, float* res) {
  const int64_t nb = w.k / block_elems<T>();
  const int64_t rb = nb * block_bytes<T>();
  if constexpr (T == QType::Q4_0 || T == QType::Q5_0 || T == QType::Q8_0) {
    const int64_t nq = nb / 4;
    const int64_t prepared_bytes = nq * MT * static_cast<int64_t>(sizeof(PreparedQuad));
    if (prepared_bytes <= (MT == 1 ? kPreparedBytesMatvec : kPreparedBytesTile)) {
      using Ops = typename LegacyOps<T>::type;
      PreparedQuad qa[kPreparedBytesTile / sizeof(PreparedQuad)];  // on the stack
      for (int m = 0; m < MT; ++m) prepare_acts<Ops>(act_row(acts, stride, m), nq, qa + m * nq);
      for (int j = 0; j < nn; ++j) {
        if (MT == 1 && rb <= kPrefetchRowBytes) {
          const char* ahead = reinterpret_cast<const char*>(w.data + (n0 + j + kPrefetchRows) * rb);
          for (int64_t o = 0; o < rb; o += 64) _mm_prefetch(ahead + o, _MM_HINT_T0);
        }
        dot_legacy_prepared<Ops, MT>(w.data + (n0 + j) * rb, qa, nq, acts, stride, nb, res + j, nn);
      }
      return;
    }
    if constexpr (MT > 4) {  // dot_legacy keeps its activation registers for at most 4 rows of x
      rows_gguf<T, 4>(w, acts, stride, n0, nn, res);
      rows_gguf<T, MT - 4>(w, acts + 4 * stride, stride, n0, nn, res + 4 * nn);
      return;
    }
  }
  for (int j = 0; j < nn; ++j) gguf_dot<T, MT>(w.data + (n0 + j) * rb, acts, stride, nb, res + j, nn);
}

// The switch on the tile height sits outside the row loop (as in the AVX2 file).
template <QType T>
void tile_gguf(const QWeightView& w, const uint8_t* acts, int64_t stride, int64_t n0, int nn, int mm, float* res) {
  switch (mm) {
    case 1: rows_gguf<T, 1>(w, acts, stride, n0, nn, res); break;
    case 2: rows_gguf<T, 2>(w, acts, stride, n0, nn, res); break;
    case 3: rows_gguf<T, 3>(w, acts, stride, n0, nn, res); break;
    case 4: rows_gguf<T, 4>(w, acts, stride, n0, nn, res); break;
    case 5: rows_gguf<T, 5>(w, acts, stride, n0, nn, res); break;
    case 6: rows_gguf<T, 6>(w, acts, stride, n0, nn, res); break;
    case 7: rows_gguf<T, 7>(w, acts, stride, n0, nn, res); break;
    default: rows_gguf<T, 8>(w, acts, stride, n0, nn, res); break;
  }
}

IsaKernels make_kernels(const IsaKernels& avx2) {
  IsaKernels k = avx2;  // to_f32 and quantize_row (activation bytes shared)
  k.level = KernelLevel::AVX512;
  // 8 rows of x per weight pass (32 zmm registers: 8 accumulators + one
  // unpacked weight step fit); affine4 borrows the AVX2 tile, 4 rows at a time.
  for (QType t : {QType::Q4_0, QType::Q5_0, QType::Q8_0, QType::Q4_K, QType::Q6_K, QType::Affine8}) k.tile_m[static_cast<int>(t)] = 8;
  k.tile[static_cast<int>(QType::Q4_0)] = tile_gguf<QType::Q4_0>;
  k.tile[static_cast<int>(QType::Q5_0)] = tile_gguf<QType::Q5_0>;
  k.tile[static_cast<int>(QType::Q8_0)] = tile_gguf<QType::Q8_0>;
  k.tile[static_cast<int>(QType::Q4_K)] = tile_gguf<QType::Q4_K>;
  k.tile[static_cast<int>(QType::Q6_K)] = tile_gguf<QType::Q6_K>;
  g_avx2_affine4 = avx2.tile[static_cast<int>(QType::Affine4)];
  g_avx2_affine8 = avx2.tile[static_cast<int>(QType::Affine8)];
  k.tile[static_cast<int>(QType::Affine4)] = tile_affine4;
  k.tile[static_cast<int>(QType::Affine8)] = tile_affine8;
  return k;
}

}  // namespace

}  // namespace tinyfast::cpu::qk::avx512

namespace tinyfast::cpu::qk {
const IsaKernels* avx512_kernels() {
  const IsaKernels* avx2 = avx2_kernels();
  if (avx2 == nullptr) return nullptr;
  static const IsaKernels k = avx512::make_kernels(*avx2);
  return &k;
}
}  // namespace tinyfast::cpu::qk

#else  // not x86-64, or a compiler without these flags: no AVX-512 kernels

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk {
const IsaKernels* avx512_kernels() { return nullptr; }
}  // namespace tinyfast::cpu::qk

#endif
