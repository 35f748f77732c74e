// Portable kernels: the reference the SIMD files are tested against and the
// path every CPU can run. Integer dot products per block, fp32 accumulation.
#include <cmath>
#include <vector>

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk {
namespace {

using quant::fp16_to_fp32;

void to_f32_scalar(const void* x, FType t, int64_t k, float* out) {
  switch (t) {
    case FType::F32:
      std::memcpy(out, x, static_cast<size_t>(k) * 4);
      return;
    case FType::F16: {
      const auto* h = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < k; ++i) out[i] = fp16_to_fp32(h[i]);
      return;
    }
    case FType::BF16: {
      const auto* h = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < k; ++i) out[i] = bf16_to_fp32(h[i]);
      return;
    }
  }
}

// Round half to even for |v| < 2^22 without libm: adding 1.5*2^23 leaves no
// fraction bits, so the fp32 add itself rounds (ties to even, the default mode).
inline float round_even(float v) {
  const float magic = 12582912.0f;
  const float t = v + magic;  // two separate roundings: no fast-math, no contraction
  return t - magic;
}

void quantize_row_scalar(const float* x, int64_t k, int block, int8_t* qs, float* d, int16_t* sums16) {
  for (int64_t b = 0; b < k / block; ++b) {
    const float* xb = x + b * block;
    float amax = 0.0f;
    for (int i = 0; i < block; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
    const bool zero = !(amax >= kTinyAmax);
    const float id = zero ? 0.0f : 127.0f / amax;
    d[b] = zero ? 0.0f : amax / 127.0f;
    for (int i = 0; i < block; ++i) {
      float r = round_even(xb[i] * id);
      if (!(r >= -127.0f)) r = -127.0f;  // also maps NaN somewhere harmless
      if (!(r <= 127.0f)) r = 127.0f;
      qs[b * block + i] = static_cast<int8_t>(r);
    }
  }
  for (int64_t s = 0; s < k / 16; ++s) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += qs[s * 16 + i];
    sums16[s] = static_cast<int16_t>(sum);
  }
}

// ----------------------------------------------------------------- dots

float dot_q4_0(const uint8_t* wrow, const uint8_t* arow, int64_t k) {
  const auto* w = reinterpret_cast<const block_q4_0*>(wrow);
  const auto* a = reinterpret_cast<const block_q8_0a*>(arow);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / 32; ++b) {
    int idot = 0;
    for (int j = 0; j < 16; ++j) {
      idot += (w[b].qs[j] & 15) * a[b].qs[j] + (w[b].qs[j] >> 4) * a[b].qs[j + 16];
    }
    sum += fp16_to_fp32(w[b].d) * a[b].d * static_cast<float>(idot - 8 * a[b].qsum);
  }
  return sum;
}

float dot_q5_0(const uint8_t* wrow, const uint8_t* arow, int64_t k) {
  const auto* w = reinterpret_cast<const block_q5_0*>(wrow);
  const auto* a = reinterpret_cast<const block_q8_0a*>(arow);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / 32; ++b) {
    uint32_t qh;
    std::memcpy(&qh, w[b].qh, 4);
    int idot = 0;
    for (int j = 0; j < 16; ++j) {
      const int lo = (w[b].qs[j] & 15) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (w[b].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      idot += lo * a[b].qs[j] + hi * a[b].qs[j + 16];
    }
    sum += fp16_to_fp32(w[b].d) * a[b].d * static_cast<float>(idot - 16 * a[b].qsum);
  }
  return sum;
}

float dot_q8_0(const uint8_t* wrow, const uint8_t* arow, int64_t k) {
  const auto* w = reinterpret_cast<const block_q8_0*>(wrow);
  const auto* a = reinterpret_cast<const block_q8_0a*>(arow);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / 32; ++b) {
    int idot = 0;
    for (int j = 0; j < 32; ++j) idot += w[b].qs[j] * a[b].qs[j];
    sum += fp16_to_fp32(w[b].d) * a[b].d * static_cast<float>(idot);
  }
  return sum;
}

float dot_q4_k(const uint8_t* wrow, const uint8_t* arow, int64_t k) {
  const auto* w = reinterpret_cast<const block_q4_K*>(wrow);
  const auto* a = reinterpret_cast<const block_q8_K*>(arow);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / 256; ++b) {
    uint8_t sc[8], m[8];
    unpack_q4_k_scales(w[b].scales, sc, m);
    int isum = 0, msum = 0;
    for (int j = 0; j < 8; ++j) {
      const uint8_t* q = w[b].qs + 32 * (j / 2);
      const int shift = (j % 2) * 4;
      int s = 0;
      for (int l = 0; l < 32; ++l) s += ((q[l] >> shift) & 15) * a[b].qs[32 * j + l];
      isum += sc[j] * s;
      msum += m[j] * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
    }
    const float d = fp16_to_fp32(w[b].d) * a[b].d;
    const float dmin = fp16_to_fp32(w[b].dmin) * a[b].d;
    sum += d * static_cast<float>(isum) - dmin * static_cast<float>(msum);
  }
  return sum;
}

float dot_q6_k(const uint8_t* wrow, const uint8_t* arow, int64_t k) {
  const auto* w = reinterpret_cast<const block_q6_K*>(wrow);
  const auto* a = reinterpret_cast<const block_q8_K*>(arow);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / 256; ++b) {
    int isum = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[b].ql + 64 * h;
      const uint8_t* qh = w[b].qh + 32 * h;
      const int8_t* aq = a[b].qs + 128 * h;
      const int8_t* sc = w[b].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int q0 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        const int s = l / 16;
        isum += sc[s] * q0 * aq[l] + sc[s + 2] * q1 * aq[l + 32] + sc[s + 4] * q2 * aq[l + 64] +
                sc[s + 6] * q3 * aq[l + 96];
      }
    }
    sum += fp16_to_fp32(w[b].d) * a[b].d * static_cast<float>(isum);
  }
  return sum;
}

// Affine: y = sum_b (scale_g * d_b) * sum_i q_i a_i + sum_g bias_g * gsum_g.
float dot_affine(const QWeightView& w, int bits, const uint8_t* wrow, const uint8_t* arow, const float* scales,
                 const float* biases) {
  const int64_t k = w.k;
  const AffineActs lay(k, w.group_size);
  const auto* aq = reinterpret_cast<const int8_t*>(arow);
  const auto* d = reinterpret_cast<const float*>(arow + lay.off_d);
  const auto* gsum = reinterpret_cast<const float*>(arow + lay.off_gsum);
  float sum = 0.0f;
  for (int64_t b = 0; b < k / 32; ++b) {
    int idot = 0;
    if (bits == 8) {
      for (int i = 0; i < 32; ++i) idot += wrow[32 * b + i] * aq[32 * b + i];
    } else {
      for (int j = 0; j < 16; ++j) {
        const uint8_t byte = wrow[16 * b + j];
        const int64_t e = 32 * b + 2 * j;
        idot += (byte & 15) * aq[affine4_pos(e, k)] + (byte >> 4) * aq[affine4_pos(e + 1, k)];
      }
    }
    sum += scales[32 * b / w.group_size] * d[b] * static_cast<float>(idot);
  }
  for (int64_t g = 0; g < k / w.group_size; ++g) sum += biases[g] * gsum[g];
  return sum;
}

// ---------------------------------------------------------------- tiles

template <float (*Dot)(const uint8_t*, const uint8_t*, int64_t)>
void tile_gguf(const QWeightView& w, const uint8_t* acts, int64_t act_stride, int64_t n0, int nn, int mm,
               float* res) {
  const int64_t rb = w.row_bytes();
  for (int j = 0; j < nn; ++j) {
    const uint8_t* wrow = w.data + (n0 + j) * rb;
    for (int i = 0; i < mm; ++i) res[i * nn + j] = Dot(wrow, acts + i * act_stride, w.k);
  }
}

template <int Bits>
void tile_affine(const QWeightView& w, const uint8_t* acts, int64_t act_stride, int64_t n0, int nn, int mm,
                 float* res) {
  const int64_t ng = w.k / w.group_size, rb = w.row_bytes();
  std::vector<float> sb(2 * ng);
  for (int j = 0; j < nn; ++j) {
    const int64_t n = n0 + j;
    for (int64_t g = 0; g < ng; ++g) {
      sb[g] = load_scale(w.scales, w.scale_type, n * ng + g);
      sb[ng + g] = load_scale(w.biases, w.scale_type, n * ng + g);
    }
    for (int i = 0; i < mm; ++i) {
      res[i * nn + j] = dot_affine(w, Bits, w.data + n * rb, acts + i * act_stride, sb.data(), sb.data() + ng);
    }
  }
}

}  // namespace

const IsaKernels& scalar_kernels() {
  static const IsaKernels k = {
      KernelLevel::Scalar,
      to_f32_scalar,
      quantize_row_scalar,
      {tile_gguf<dot_q4_0>, tile_gguf<dot_q5_0>, tile_gguf<dot_q8_0>, tile_gguf<dot_q4_k>, tile_gguf<dot_q6_k>,
       tile_affine<4>, tile_affine<8>},
  };
  return k;
}

}  // namespace tinyfast::cpu::qk
