// qmatmul driver: activation quantization, threading, tiling, output
// conversion, and dequantization. Kernels live in qmatmul_<isa>.cpp.
#include "cpu/qmatmul.h"

#include <algorithm>
#include <atomic>
#include <bit>

#include "cpu/cpu_features.h"
#include "cpu/qmatmul_internal.h"
#include "cpu/thread_pool.h"

static_assert(std::endian::native == std::endian::little,
              "GGUF blocks and MLX affine words are little-endian; big-endian hosts are not supported");

namespace tinyfast::cpu {

using namespace qk;

namespace {

constexpr QTypeInfo kInfo[kNumQTypes] = {
    {"q4_0", 32, sizeof(block_q4_0), 32},   {"q5_0", 32, sizeof(block_q5_0), 32},
    {"q8_0", 32, sizeof(block_q8_0), 32},   {"q4_k", 256, sizeof(block_q4_K), 256},
    {"q6_k", 256, sizeof(block_q6_K), 256},
    {"affine4", 32, 16, 32},                {"affine8", 32, 32, 32},
};

// Callers pass a level from available_levels() (ops::parse_kernel checks it):
// a level the CPU lacks would fault, not fall back.
const IsaKernels& kernels_for(KernelLevel level) {
  const IsaKernels* k = nullptr;
  switch (level) {
    case KernelLevel::AVX2: k = avx2_kernels(); break;
    case KernelLevel::AVX512: k = avx512_kernels(); break;
    case KernelLevel::Neon: k = neon_kernels(); break;
    case KernelLevel::NeonDot: k = neon_dotprod_kernels(); break;
    case KernelLevel::Scalar: break;
  }
  return k != nullptr ? *k : scalar_kernels();
}

// Packs one row's codes/scales/sums into the layout the kernels of `w` read.
void pack_row(const QWeightView& w, const int8_t* qs, const float* d, const int16_t* s16, uint8_t* out,
              int64_t stride) {
  std::memset(out, 0, static_cast<size_t>(stride));
  const int64_t k = w.k;
  switch (w.type) {
    case QType::Q4_0:
    case QType::Q5_0:
    case QType::Q8_0: {
      auto* blocks = reinterpret_cast<block_q8_0a*>(out);
      for (int64_t b = 0; b < k / 32; ++b) {
        blocks[b].d = d[b];
        blocks[b].qsum = s16[2 * b] + s16[2 * b + 1];
        std::memcpy(blocks[b].qs, qs + 32 * b, 32);
      }
      return;
    }
    case QType::Q4_K:
    case QType::Q6_K: {
      auto* blocks = reinterpret_cast<block_q8_K*>(out);
      for (int64_t b = 0; b < k / 256; ++b) {
        blocks[b].d = d[b];
        std::memcpy(blocks[b].qs, qs + 256 * b, 256);
        std::memcpy(blocks[b].bsums, s16 + 16 * b, 32);
      }
      return;
    }
    case QType::Affine4:
    case QType::Affine8: {
      const AffineActs lay(k, w.group_size);
      auto* codes = reinterpret_cast<int8_t*>(out);
      if (w.type == QType::Affine8) {
        std::memcpy(codes, qs, static_cast<size_t>(k));
      } else {
        for (int64_t e = 0; e < k; ++e) codes[affine4_pos(e, k)] = qs[e];
      }
      auto* dd = reinterpret_cast<float*>(out + lay.off_d);
      auto* qsum = reinterpret_cast<int32_t*>(out + lay.off_qsum);
      auto* gsum = reinterpret_cast<float*>(out + lay.off_gsum);
      auto* dl = reinterpret_cast<float*>(out + lay.off_dl);
      const int64_t nb = k / 32, per_group = w.group_size / 32;
      for (int64_t b = 0; b < nb; ++b) {
        dd[b] = d[b];
        qsum[b] = s16[2 * b] + s16[2 * b + 1];
      }
      for (int64_t g = 0; g < k / w.group_size; ++g) {
        float s = 0.0f;
        for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) s += d[b] * static_cast<float>(qsum[b]);
        gsum[g] = s;
      }
      for (int64_t b = 0; b < nb; ++b) {
        for (int l = 0; l < 4; ++l) dl[8 * (b / 2) + 4 * (b % 2) + l] = d[b];
      }
      return;
    }
  }
}

void quantize_rows(const QWeightView& w, const IsaKernels& kern, const void* x, FType x_type, int64_t m_rows,
                   uint8_t* acts, int64_t stride) {
  const int64_t k = w.k;
  const int block = qtype_info(w.type).act_block;
  const size_t x_item = x_type == FType::F32 ? 4 : 2;
  ThreadPool::global().parallel_for(
      m_rows,
      [&](int64_t r0, int64_t r1) {
        // grow-only per-thread scratch: no allocation per call in steady state
        thread_local std::vector<float> xf, d;
        thread_local std::vector<int8_t> qs;
        thread_local std::vector<int16_t> s16;
        if (xf.size() < static_cast<size_t>(k)) {
          xf.resize(k);
          d.resize(k / 32);
          qs.resize(k);
          s16.resize(k / 16);
        }
        for (int64_t r = r0; r < r1; ++r) {
          const void* xr = static_cast<const uint8_t*>(x) + r * k * static_cast<int64_t>(x_item);
          kern.to_f32(xr, x_type, k, xf.data());
          kern.quantize_row(xf.data(), k, block, qs.data(), d.data(), s16.data());
          pack_row(w, qs.data(), d.data(), s16.data(), acts + r * stride, stride);
        }
      },
      std::max<int64_t>(1, 16384 / std::max<int64_t>(1, k)));
}

void store(const float* res, int mm, int nn, void* y, FType y_type, int64_t n, int64_t m0, int64_t n0) {
  for (int i = 0; i < mm; ++i) {
    const int64_t off = (m0 + i) * n + n0;
    const float* r = res + i * nn;
    switch (y_type) {
      case FType::F32:
        std::memcpy(static_cast<float*>(y) + off, r, static_cast<size_t>(nn) * 4);
        break;
      case FType::F16: {
        auto* o = static_cast<uint16_t*>(y) + off;
        for (int j = 0; j < nn; ++j) o[j] = quant::fp32_to_fp16(r[j]);
        break;
      }
      case FType::BF16: {
        auto* o = static_cast<uint16_t*>(y) + off;
        for (int j = 0; j < nn; ++j) o[j] = fp32_to_bf16(r[j]);
        break;
      }
    }
  }
}

}  // namespace

const QTypeInfo& qtype_info(QType t) { return kInfo[static_cast<int>(t)]; }

int64_t QWeightView::row_bytes() const {
  const QTypeInfo& info = qtype_info(type);
  return k / info.block_elems * info.block_bytes;
}

std::vector<KernelLevel> available_levels() {
  std::vector<KernelLevel> levels;
  const std::string best = kernel_level();
  const CpuFeatures& f = cpu_features();
  // AVX-512 kernels also use AVX2 code (quantizer, affine tiles) and VNNI.
  if (best == "avx512" && f.avx512vnni && f.avx2 && avx512_kernels() != nullptr)
    levels.push_back(KernelLevel::AVX512);
  if ((best == "avx2" || best == "avx512") && avx2_kernels() != nullptr) levels.push_back(KernelLevel::AVX2);
  if (best == "neon") {
    if (f.neon_dotprod && neon_dotprod_kernels() != nullptr) levels.push_back(KernelLevel::NeonDot);
    if (neon_kernels() != nullptr) levels.push_back(KernelLevel::Neon);
  }
  levels.push_back(KernelLevel::Scalar);
  return levels;
}

KernelLevel default_level() { return available_levels().front(); }

const char* level_name(KernelLevel l) {
  switch (l) {
    case KernelLevel::AVX2: return "avx2";
    case KernelLevel::AVX512: return "avx512";
    case KernelLevel::Neon: return "neon";
    case KernelLevel::NeonDot: return "neon_dotprod";
    case KernelLevel::Scalar: break;
  }
  return "scalar";
}

size_t act_row_bytes(const QWeightView& w) { return static_cast<size_t>(act_row_stride(w.type, w.k, w.group_size)); }

void quantize_activations(const QWeightView& w, const void* x, FType x_type, int64_t m_rows, uint8_t* out,
                          KernelLevel level) {
  quantize_rows(w, kernels_for(level), x, x_type, m_rows, out, act_row_stride(w.type, w.k, w.group_size));
}

size_t qmatmul_workspace_bytes(const QWeightView& w, int64_t m_rows) {
  return static_cast<size_t>(act_row_stride(w.type, w.k, w.group_size) * std::max<int64_t>(m_rows, 0));
}

void qmatmul(const QWeightView& w, const void* x, FType x_type, int64_t m_rows, void* y, FType y_type,
             KernelLevel level, uint8_t* workspace) {
  if (m_rows <= 0 || w.n <= 0) return;
  const IsaKernels& kern = kernels_for(level);
  const int64_t stride = act_row_stride(w.type, w.k, w.group_size);
  quantize_rows(w, kern, x, x_type, m_rows, workspace, stride);

  // A tile of weight rows stays in L2 while every row tile of x passes over it.
  const int64_t rb = w.row_bytes();
  const int64_t nt_rows = std::clamp<int64_t>((128 * 1024) / std::max<int64_t>(1, rb), 1, 64);
  const int64_t n_tiles = (w.n + nt_rows - 1) / nt_rows;
  // Threads take work items of consecutive tiles, >= kItemBytes of weights
  // each but at least one item per thread: one long contiguous read per item
  // keeps the hardware prefetchers streaming, where single tiles dealt in turn
  // made each thread's reads jump every few tens of KB (measured paired: Gemma's
  // LM head matvec 1.15-1.2x, 2048x640 Q5_0 1.1x, prefill shapes 1.05x).
  constexpr int64_t kItemBytes = 512 << 10;
  const int64_t threads = ThreadPool::global().num_threads();
  const int64_t want_items = std::max(std::min(threads, n_tiles), w.n * rb / kItemBytes);
  const int64_t item_tiles = (n_tiles + want_items - 1) / want_items;
  const int64_t n_items = (n_tiles + item_tiles - 1) / item_tiles;
  // One worker per ~64 KB of weights x rows of x (waking a thread costs more
  // than that), at most one per thread.
  const int64_t work = w.n * rb * m_rows;
  const int64_t workers = std::clamp<int64_t>(work / (64 * 1024), 1, n_items);
  const TileFn tile = kern.tile[static_cast<int>(w.type)];
  const int tile_m = kern.tile_m[static_cast<int>(w.type)];
  const uint8_t* act_base = workspace;

  // Items are handed out dynamically: on a shared machine a descheduled
  // worker must not leave the others idle. Which thread computes a tile does
  // not change its result.
  std::atomic<int64_t> next_item{0};
  ThreadPool::global().parallel_for(workers, [&](int64_t, int64_t) {
    float res[kMaxTileM * 64];
    for (int64_t i = next_item.fetch_add(1, std::memory_order_relaxed); i < n_items;
         i = next_item.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t t_end = std::min(n_tiles, (i + 1) * item_tiles);
      for (int64_t t = i * item_tiles; t < t_end; ++t) {
        const int64_t n0 = t * nt_rows;
        const int nn = static_cast<int>(std::min(nt_rows, w.n - n0));
        for (int64_t m0 = 0; m0 < m_rows; m0 += tile_m) {
          const int mm = static_cast<int>(std::min<int64_t>(tile_m, m_rows - m0));
          tile(w, act_base + m0 * stride, stride, n0, nn, mm, res);
          store(res, mm, nn, y, y_type, w.n, m0, n0);
        }
      }
    }
  });
}

// --------------------------------------------------------------- dequantize
// fp32 operation order follows tests/reference/quant.py so results are
// bit-identical: d*q; (d*sc)*q - dmin*m; (d*sc)*q; scale*q + bias.

namespace {

void dequant_row(const QWeightView& w, int64_t n, float* out) {
  const int64_t k = w.k;
  const uint8_t* row = w.data + n * w.row_bytes();
  switch (w.type) {
    case QType::Q4_0: {
      const auto* b = reinterpret_cast<const block_q4_0*>(row);
      for (int64_t i = 0; i < k / 32; ++i, out += 32) {
        const float d = quant::fp16_to_fp32(b[i].d);
        for (int j = 0; j < 16; ++j) {
          out[j] = d * static_cast<float>((b[i].qs[j] & 15) - 8);
          out[j + 16] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
        }
      }
      return;
    }
    case QType::Q5_0: {
      const auto* b = reinterpret_cast<const block_q5_0*>(row);
      for (int64_t i = 0; i < k / 32; ++i, out += 32) {
        const float d = quant::fp16_to_fp32(b[i].d);
        uint32_t qh;
        std::memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < 16; ++j) {
          const int lo = (b[i].qs[j] & 15) | static_cast<int>(((qh >> j) & 1u) << 4);
          const int hi = (b[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
          out[j] = d * static_cast<float>(lo - 16);
          out[j + 16] = d * static_cast<float>(hi - 16);
        }
      }
      return;
    }
    case QType::Q8_0: {
      const auto* b = reinterpret_cast<const block_q8_0*>(row);
      for (int64_t i = 0; i < k / 32; ++i, out += 32) {
        const float d = quant::fp16_to_fp32(b[i].d);
        for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(b[i].qs[j]);
      }
      return;
    }
    case QType::Q4_K: {
      const auto* b = reinterpret_cast<const block_q4_K*>(row);
      for (int64_t i = 0; i < k / 256; ++i, out += 256) {
        uint8_t sc[8], m[8];
        unpack_q4_k_scales(b[i].scales, sc, m);
        const float d = quant::fp16_to_fp32(b[i].d), dmin = quant::fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; ++j) {
          const float ds = d * static_cast<float>(sc[j]), dm = dmin * static_cast<float>(m[j]);
          const uint8_t* q = b[i].qs + 32 * (j / 2);
          const int shift = 4 * (j % 2);
          for (int l = 0; l < 32; ++l) out[32 * j + l] = ds * static_cast<float>((q[l] >> shift) & 15) - dm;
        }
      }
      return;
    }
    case QType::Q6_K: {
      const auto* b = reinterpret_cast<const block_q6_K*>(row);
      for (int64_t i = 0; i < k / 256; ++i, out += 256) {
        const float d = quant::fp16_to_fp32(b[i].d);
        for (int h = 0; h < 2; ++h) {
          const uint8_t* ql = b[i].ql + 64 * h;
          const uint8_t* qh = b[i].qh + 32 * h;
          float* o = out + 128 * h;
          for (int l = 0; l < 32; ++l) {
            const int q[4] = {(ql[l] & 15) | (((qh[l] >> 0) & 3) << 4), (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                              (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4), (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)};
            for (int g = 0; g < 4; ++g) {
              const int e = 32 * g + l;
              const float ds = d * static_cast<float>(b[i].scales[8 * h + e / 16]);
              o[e] = ds * static_cast<float>(q[g] - 32);
            }
          }
        }
      }
      return;
    }
    case QType::Affine4:
    case QType::Affine8: {
      const int bits = w.type == QType::Affine4 ? 4 : 8;
      const int64_t ng = k / w.group_size;
      for (int64_t e = 0; e < k; ++e) {
        const int q = bits == 8 ? row[e] : (row[e / 2] >> (4 * (e % 2))) & 15;
        const float s = load_scale(w.scales, w.scale_type, n * ng + e / w.group_size);
        const float bias = load_scale(w.biases, w.scale_type, n * ng + e / w.group_size);
        out[e] = s * static_cast<float>(q) + bias;
      }
      return;
    }
  }
}

}  // namespace

void dequantize(const QWeightView& w, float* out) {
  ThreadPool::global().parallel_for(
      w.n,
      [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) dequant_row(w, n, out + n * w.k);
      },
      std::max<int64_t>(1, 16384 / std::max<int64_t>(1, w.k)));
}

// ------------------------------------------------------------- bandwidth

uint64_t stream_read(const uint8_t* data, size_t bytes) {
  const int64_t words = static_cast<int64_t>(bytes / 8);
  constexpr int64_t kChunk = 1 << 16;  // words per work item (512 KB)
  const int64_t chunks = (words + kChunk - 1) / kChunk;
  std::vector<uint64_t> partial(static_cast<size_t>(std::max<int64_t>(chunks, 1)), 0);
  // Same dynamic hand-out as qmatmul, so the ceiling is measured the way the
  // kernels run (a static split would stall on a descheduled thread).
  std::atomic<int64_t> next{0};
  const int64_t workers = std::clamp<int64_t>(chunks, 1, ThreadPool::global().num_threads());
  ThreadPool::global().parallel_for(workers, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t w0 = c * kChunk, w1 = std::min(words, w0 + kChunk);
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = w0;
      for (; i + 4 <= w1; i += 4) {
        uint64_t v[4];
        std::memcpy(v, data + i * 8, 32);
        s0 += v[0];
        s1 += v[1];
        s2 += v[2];
        s3 += v[3];
      }
      for (; i < w1; ++i) {
        uint64_t v;
        std::memcpy(&v, data + i * 8, 8);
        s0 += v;
      }
      partial[c] = s0 + s1 + s2 + s3;
    }
  });
  uint64_t total = 0;
  for (uint64_t p : partial) total += p;
  return total;
}

}  // namespace tinyfast::cpu
