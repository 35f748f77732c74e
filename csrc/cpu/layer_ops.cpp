#include "cpu/layer_ops.h"

#include <cmath>
#include <cstring>
#include <vector>

#include <mlx/types/half_types.h>

#include "cpu/thread_pool.h"

namespace tinyfast::cpu {
namespace {

namespace mx = mlx::core;

#include "cpu/vec8.h"

// The activations of gated_act on eight gate values. tanh and exp are the
// vector versions (libm's scalar tanhf/expf were ~9 % of a Gemma decode step).
inline f32x8 activation(GatedAct act, f32x8 g) {
  switch (act) {
    case GatedAct::gelu_tanh: {
      const float k0 = 0.7978845608028654f;  // sqrt(2 / pi)
      const f32x8 inner = vsplat(k0) * (g + vsplat(0.044715f) * (g * g * g));
      return vsplat(0.5f) * g * (vsplat(1.0f) + vtanh(inner));
    }
    case GatedAct::gelu: {  // exact (erf) GELU: rare, scalar libm
      f32x8 y;
      for (int k = 0; k < 8; ++k) y[k] = 0.5f * g[k] * (1.0f + std::erf(g[k] * 0.7071067811865476f));
      return y;
    }
    default:  // silu
      return g / (vsplat(1.0f) + vexp(-g));
  }
}

inline float load(const void* p, int64_t i, FloatType t) {
  switch (t) {
    case FloatType::f16: return static_cast<float>(static_cast<const mx::float16_t*>(p)[i]);
    case FloatType::bf16: return static_cast<float>(static_cast<const mx::bfloat16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline void store(void* p, int64_t i, float v, FloatType t) {
  switch (t) {
    case FloatType::f16: static_cast<mx::float16_t*>(p)[i] = static_cast<mx::float16_t>(v); break;
    case FloatType::bf16: static_cast<mx::bfloat16_t*>(p)[i] = static_cast<mx::bfloat16_t>(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// Splits `rows` rows of `row_cost` elements over the pool only when there is
// enough work to pay for waking the threads (~10 us).
template <typename F>
void for_rows(int64_t rows, int64_t row_cost, F&& fn) {
  constexpr int64_t kMinWork = 1 << 15;
  if (rows * row_cost < 2 * kMinWork || rows == 1) {
    fn(0, rows);
    return;
  }
  const int64_t min_rows = std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, row_cost));
  ThreadPool::global().parallel_for(rows, fn, min_rows);
}

}  // namespace

void rms_norm(const RMSNormArgs& a) {
  for_rows(a.rows, a.dim, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * a.dim;
      // Eight partial sums in a fixed order, then a fixed tree: deterministic.
      float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = 0;
      if (a.type == FloatType::f32) {
        const float* x = static_cast<const float*>(a.x) + base;
        for (; i + 8 <= a.dim; i += 8)
          for (int l = 0; l < 8; ++l) part[l] += x[i + l] * x[i + l];
      }
      for (; i < a.dim; ++i) {
        const float v = load(a.x, base + i, a.type);
        part[i & 7] += v * v;
      }
      const float sum = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
      const float inv = 1.0f / std::sqrt(sum / static_cast<float>(a.dim) + a.eps);
      for (int64_t j = 0; j < a.dim; ++j) store(a.out, base + j, (load(a.x, base + j, a.type) * inv) * a.weight[j], a.type);
    }
  });
}

void rope(const RopeArgs& a) {
  const int64_t half = a.rotary_dims / 2;
  const int64_t row = a.heads * a.head_dim;
  for_rows(a.tokens, row * 8, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> cs;
    if (cs.size() < static_cast<size_t>(2 * half)) cs.resize(2 * half);
    for (int64_t t = t0; t < t1; ++t) {
      const float pos = static_cast<float>(a.positions[t]);
      for (int64_t j = 0; j < half; ++j) {
        const float ang = pos * a.inv_freq[j];
        cs[2 * j] = std::cos(ang);
        cs[2 * j + 1] = std::sin(ang);
      }
      for (int64_t h = 0; h < a.heads; ++h) {
        const int64_t base = t * row + h * a.head_dim;
        for (int64_t j = 0; j < half; ++j) {
          const int64_t i1 = a.traditional ? 2 * j : j;
          const int64_t i2 = a.traditional ? 2 * j + 1 : j + half;
          const float x1 = load(a.x, base + i1, a.type), x2 = load(a.x, base + i2, a.type);
          const float c = cs[2 * j], s = cs[2 * j + 1];
          store(a.out, base + i1, (x1 * c - x2 * s) * a.scale, a.type);
          store(a.out, base + i2, (x2 * c + x1 * s) * a.scale, a.type);
        }
        for (int64_t i = a.rotary_dims; i < a.head_dim; ++i) store(a.out, base + i, load(a.x, base + i, a.type), a.type);
      }
    }
  });
}

void gated_act(const GatedActArgs& a) {
  constexpr int64_t kChunk = 4096;  // a multiple of 8
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
  for_rows(chunks, kChunk * 8, [&](int64_t c0, int64_t c1) {
    const int64_t end = std::min(a.n, c1 * kChunk);
    // Eight elements at a time, the last group zero-padded: every element goes
    // through the same vector arithmetic wherever it sits, so a token's result
    // does not depend on the batch around it.
    for (int64_t i = c0 * kChunk; i < end; i += 8) {
      const int n = static_cast<int>(std::min<int64_t>(8, end - i));
      float g[8] = {}, u[8] = {}, y[8];
      for (int k = 0; k < n; ++k) {
        g[k] = load(a.gate, i + k, a.type);
        u[k] = load(a.up, i + k, a.type);
      }
      vstore(y, activation(a.act, vload(g)) * vload(u));
      for (int k = 0; k < n; ++k) store(a.out, i + k, y[k], a.type);
    }
  });
}

}  // namespace tinyfast::cpu
