// Row kernels of the layer ops (rms_norm, rope, gated_act), compiled once per
// instruction set: the including file defines TF_LAYER_NS (baseline, avx2) and
// its own compile flags (layer_ops.cpp: baseline; layer_ops_avx2.cpp: AVX2,
// FMA, F16C). The driver (layer_ops.cpp) splits rows over the thread pool and
// picks the build from kernel_level().
//
// Numerics, the same in every build: float32 inside; a row's result is one
// fixed sequence of operations whatever the batch or thread split (batch
// invariant); no FMA contraction by the compiler (-ffp-contract=off), so the
// AVX2 build differs from the baseline one only where vec8.h uses explicit FMA
// (vexp's polynomial), within the ops' tolerances.
//
// Linker hazard (as in paged_attention_kernel.h): everything here has internal
// linkage or a name inside TF_LAYER_NS, and no standard-library template or
// header inline function is odr-used, so no weak symbol compiled with AVX2 can
// be picked by the linker for baseline callers.
#ifndef TF_LAYER_NS
#error "define TF_LAYER_NS before including layer_ops_kernel.h"
#endif

#include <cstdint>
#include <cstring>

#include "cpu/layer_ops.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TF_LAYER_F16C 1
#else
#include "core/quant_blocks.h"  // software fp16 conversion (baseline build only)
#endif

namespace tinyfast::cpu::layer::TF_LAYER_NS {
namespace {

#include "cpu/vec8.h"

inline float f16_to_f32(uint16_t h) {
#ifdef TF_LAYER_F16C
  return _cvtsh_ss(h);
#else
  return quant::fp16_to_fp32(h);
#endif
}
inline uint16_t f32_to_f16(float f) {
#ifdef TF_LAYER_F16C
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
#else
  return quant::fp32_to_fp16(f);
#endif
}
inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round to nearest even, NaN stays NaN (MLX's bfloat16 conversion).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float load(const void* p, int64_t i, FloatType t) {
  switch (t) {
    case FloatType::f16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case FloatType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline void store(void* p, int64_t i, float v, FloatType t) {
  switch (t) {
    case FloatType::f16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    case FloatType::bf16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// Eight consecutive elements (same values as eight load() calls).
inline f32x8 load8(const void* p, int64_t i, FloatType t) {
  if (t == FloatType::f32) return vload(static_cast<const float*>(p) + i);
#ifdef TF_LAYER_F16C
  if (t == FloatType::f16)
    return (f32x8)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
#endif
  f32x8 v;
  for (int k = 0; k < 8; ++k) v[k] = load(p, i + k, t);
  return v;
}

inline void store8(void* p, int64_t i, f32x8 v, FloatType t) {
  if (t == FloatType::f32) return vstore(static_cast<float*>(p) + i, v);
#ifdef TF_LAYER_F16C
  if (t == FloatType::f16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(p) + i),
                     _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
    return;
  }
#endif
  for (int k = 0; k < 8; ++k) store(p, i + k, v[k], t);
}

// The activations of gated_act on eight gate values (vector tanh/exp: libm's
// scalar tanhf/expf were ~9 % of a Gemma decode step).
inline f32x8 activation(GatedAct act, f32x8 g) {
  switch (act) {
    case GatedAct::gelu_tanh: {
      const float k0 = 0.7978845608028654f;  // sqrt(2 / pi)
      const f32x8 inner = vsplat(k0) * (g + vsplat(0.044715f) * (g * g * g));
      return vsplat(0.5f) * g * (vsplat(1.0f) + vtanh(inner));
    }
    case GatedAct::gelu: {  // exact (erf) GELU: rare, scalar libm
      f32x8 y;
      for (int k = 0; k < 8; ++k) y[k] = 0.5f * g[k] * (1.0f + __builtin_erff(g[k] * 0.7071067811865476f));
      return y;
    }
    default:  // silu
      return g / (vsplat(1.0f) + vexp(-g));
  }
}

}  // namespace

void rms_norm_rows(const RMSNormArgs& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t base = r * a.dim;
    // Element i goes to partial sum i % 8; then a fixed tree: deterministic.
    f32x8 part = vsplat(0.0f);
    int64_t i = 0;
    for (; i + 8 <= a.dim; i += 8) {
      const f32x8 v = load8(a.x, base + i, a.type);
      part = part + v * v;
    }
    for (; i < a.dim; ++i) {
      const float v = load(a.x, base + i, a.type);
      part[i & 7] += v * v;
    }
    const float sum = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    const float inv = 1.0f / __builtin_sqrtf(sum / static_cast<float>(a.dim) + a.eps);
    int64_t j = 0;
    for (; j + 8 <= a.dim; j += 8)
      store8(a.out, base + j, (load8(a.x, base + j, a.type) * vsplat(inv)) * vload(a.weight + j), a.type);
    for (; j < a.dim; ++j) store(a.out, base + j, (load(a.x, base + j, a.type) * inv) * a.weight[j], a.type);
  }
}

void rope_rows(const RopeArgs& a, int64_t t0, int64_t t1) {
  constexpr int64_t kChunk = 256;  // angles computed per pass (any rotary_dims)
  float cos_j[kChunk], sin_j[kChunk];
  const int64_t half = a.rotary_dims / 2;
  const int64_t row = a.heads * a.head_dim;
  const f32x8 scale = vsplat(a.scale);
  for (int64_t t = t0; t < t1; ++t) {
    const float pos = static_cast<float>(a.positions[t]);
    for (int64_t j0 = 0; j0 < half; j0 += kChunk) {
      const int64_t nj = half - j0 < kChunk ? half - j0 : kChunk;
      for (int64_t j = 0; j < nj; ++j) {
        const float ang = pos * a.inv_freq[j0 + j];
        cos_j[j] = __builtin_cosf(ang);
        sin_j[j] = __builtin_sinf(ang);
      }
      for (int64_t h = 0; h < a.heads; ++h) {
        const int64_t base = t * row + h * a.head_dim + (a.traditional ? 2 * j0 : j0);
        int64_t j = 0;
        if (!a.traditional) {  // halves (NeoX): eight pairs per step
          for (; j + 8 <= nj; j += 8) {
            const f32x8 x1 = load8(a.x, base + j, a.type), x2 = load8(a.x, base + j + half, a.type);
            const f32x8 c = vload(cos_j + j), s = vload(sin_j + j);
            store8(a.out, base + j, (x1 * c - x2 * s) * scale, a.type);
            store8(a.out, base + j + half, (x2 * c + x1 * s) * scale, a.type);
          }
        }
        for (; j < nj; ++j) {
          const int64_t i1 = a.traditional ? 2 * j : j;
          const int64_t i2 = a.traditional ? 2 * j + 1 : j + half;
          const float x1 = load(a.x, base + i1, a.type), x2 = load(a.x, base + i2, a.type);
          store(a.out, base + i1, (x1 * cos_j[j] - x2 * sin_j[j]) * a.scale, a.type);
          store(a.out, base + i2, (x2 * cos_j[j] + x1 * sin_j[j]) * a.scale, a.type);
        }
      }
    }
    for (int64_t h = 0; h < a.heads; ++h) {  // features past rotary_dims pass through
      const int64_t base = t * row + h * a.head_dim;
      for (int64_t i = a.rotary_dims; i < a.head_dim; ++i) store(a.out, base + i, load(a.x, base + i, a.type), a.type);
    }
  }
}

void gated_act_range(const GatedActArgs& a, int64_t begin, int64_t end) {
  // Eight elements at a time, the last group zero-padded: every element goes
  // through the same vector arithmetic wherever it sits, so a token's result
  // does not depend on the batch around it. `begin` is a multiple of 8.
  int64_t i = begin;
  for (; i + 8 <= end; i += 8)
    store8(a.out, i, activation(a.act, load8(a.gate, i, a.type)) * load8(a.up, i, a.type), a.type);
  if (i < end) {
    const int n = static_cast<int>(end - i);
    f32x8 g = vsplat(0.0f), u = vsplat(0.0f);
    for (int k = 0; k < n; ++k) {
      g[k] = load(a.gate, i + k, a.type);
      u[k] = load(a.up, i + k, a.type);
    }
    const f32x8 y = activation(a.act, g) * u;
    for (int k = 0; k < n; ++k) store(a.out, i + k, y[k], a.type);
  }
}

}  // namespace tinyfast::cpu::layer::TF_LAYER_NS
