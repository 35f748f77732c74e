// Every qmatmul kernel level built for this target against the scalar kernels
// and an exact float64 product, without MLX: links the real driver
// (csrc/cpu/qmatmul.cpp: activation quantization, tiling, threads, dispatch)
// and the kernel files. Built for aarch64 and run under qemu-user by
// test_neon_qmatmul.py (also natively on x86-64, where it checks AVX2).
//
// The contract checked is the one tests/kernels/test_qmatmul.py holds the
// AVX2 path to:
//  * quantized activation bytes identical to the scalar quantizer's;
//  * each output within the derived fp32 bound of x_tilde @ W.T
//    (tests/reference/qmatmul.py: gamma(K/32 + 16) * sum |x_tilde| * Wabs),
//    with W from dequantize() (bit-identical to the NumPy reference);
//  * a row's result bit-identical alone, in any tile, for any thread count;
//  * and, NEON only, the SDOT and baseline builds bit-identical to each other.
// Usage: qmatmul_check            full sweep, prints a summary, exit 1 on a failure
//        qmatmul_check features   detected features and available levels
//        qmatmul_check force-dotprod   runs the SDOT kernels without asking
//                                      the CPU (must fault where it lacks SDOT)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/qmatmul.h"
#include "cpu/qmatmul_internal.h"
#include "cpu/thread_pool.h"

using namespace tinyfast;
using namespace tinyfast::cpu;

namespace {

std::mt19937_64 rng(12345);
double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }

int failures = 0;
long checks = 0;
double worst_ratio = 0.0;  // max |y - y_q| / tol over every checked output

void fail(const std::string& what) {
  if (++failures <= 20) std::printf("FAIL %s\n", what.c_str());
}

struct Weight {
  std::vector<uint8_t> data, scales, biases;
  QWeightView view;
};

// fp16 scale: mostly normal magnitudes around 2^-6, sometimes subnormal.
uint16_t random_scale16() {
  if (rng() % 16 == 0) return static_cast<uint16_t>((rng() % 1024) | (rng() % 2 ? 0x8000 : 0));
  return quant::fp32_to_fp16(static_cast<float>(uniform(-1, 1) * std::ldexp(1.0, -static_cast<int>(rng() % 8))));
}

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

void store_float(std::vector<uint8_t>& out, FType t, float v) {
  uint8_t b[4];
  size_t n = 4;
  if (t == FType::F32) std::memcpy(b, &v, 4);
  else {
    const uint16_t h = t == FType::F16 ? quant::fp32_to_fp16(v) : qk::fp32_to_bf16(v);
    std::memcpy(b, &h, 2);
    n = 2;
  }
  out.insert(out.end(), b, b + n);
}

// Uniformly random code bytes (every code value, q8_0's -128, q6_k's 0 and 63,
// 6-bit q4_k scales/mins up to 63), random fp16 super-scales.
Weight make_weight(QType t, int64_t n, int64_t k, int gs, FType st) {
  Weight w;
  w.view.type = t;
  w.view.n = n;
  w.view.k = k;
  const int64_t rb = w.view.row_bytes();
  w.data.resize(static_cast<size_t>(n * rb));
  for (auto& b : w.data) b = static_cast<uint8_t>(rng());
  const QTypeInfo& info = qtype_info(t);
  if (t == QType::Affine4 || t == QType::Affine8) {
    for (int64_t i = 0; i < n * (k / gs); ++i) {
      store_float(w.scales, st, static_cast<float>(uniform(-0.05, 0.05)));
      store_float(w.biases, st, static_cast<float>(uniform(-0.5, 0.5)));
    }
    w.view.scales = w.scales.data();
    w.view.biases = w.biases.data();
    w.view.scale_type = st;
    w.view.group_size = gs;
  } else {
    for (int64_t b = 0; b < n * k / info.block_elems; ++b) {
      uint8_t* blk = w.data.data() + b * info.block_bytes;
      if (t == QType::Q6_K) put16(blk + 208, random_scale16());
      else put16(blk, random_scale16());
      if (t == QType::Q4_K) put16(blk + 2, random_scale16());
    }
  }
  w.view.data = w.data.data();
  return w;
}

// Magnitudes of the terms the kernels add before they cancel (reference/qmatmul.py).
std::vector<double> weight_terms(const Weight& w, const std::vector<float>& wf) {
  const QWeightView& v = w.view;
  std::vector<double> a(wf.size());
  for (size_t i = 0; i < wf.size(); ++i) a[i] = std::fabs(static_cast<double>(wf[i]));
  if (v.type == QType::Q4_K) {
    for (int64_t n = 0; n < v.n; ++n) {
      for (int64_t b = 0; b < v.k / 256; ++b) {
        const auto& blk = reinterpret_cast<const qk::block_q4_K*>(v.data + n * v.row_bytes())[b];
        uint8_t sc[8], m[8];
        qk::unpack_q4_k_scales(blk.scales, sc, m);
        const double d = quant::fp16_to_fp32(blk.d), dmin = quant::fp16_to_fp32(blk.dmin);
        for (int e = 0; e < 256; ++e) {
          const int j = e / 32, q = (blk.qs[32 * (j / 2) + e % 32] >> (4 * (j % 2))) & 15;
          a[n * v.k + 256 * b + e] = std::fabs(d * sc[j] * q) + std::fabs(dmin * m[j]);
        }
      }
    }
  } else if (v.type == QType::Affine4 || v.type == QType::Affine8) {
    const int64_t ng = v.k / v.group_size;
    for (int64_t n = 0; n < v.n; ++n) {
      const uint8_t* row = v.data + n * v.row_bytes();
      for (int64_t e = 0; e < v.k; ++e) {
        const int q = v.type == QType::Affine8 ? row[e] : (row[e / 2] >> (4 * (e % 2))) & 15;
        const int64_t g = n * ng + e / v.group_size;
        a[n * v.k + e] = std::fabs(qk::load_scale(v.scales, v.scale_type, g)) * (q + 256) +
                         std::fabs(qk::load_scale(v.biases, v.scale_type, g));
      }
    }
  }
  return a;
}

// x_tilde (codes times block scales) read back from the scalar-packed rows.
std::vector<double> act_values(const QWeightView& w, const std::vector<uint8_t>& acts, int64_t m) {
  const int64_t k = w.k, stride = static_cast<int64_t>(act_row_bytes(w));
  std::vector<double> xt(static_cast<size_t>(m * k));
  for (int64_t r = 0; r < m; ++r) {
    const uint8_t* row = acts.data() + r * stride;
    for (int64_t e = 0; e < k; ++e) {
      double v;
      switch (w.type) {
        case QType::Q4_K:
        case QType::Q6_K: {
          const auto& b = reinterpret_cast<const qk::block_q8_K*>(row)[e / 256];
          v = static_cast<double>(b.d) * b.qs[e % 256];
          break;
        }
        case QType::Affine4:
        case QType::Affine8: {
          const qk::AffineActs lay(k, w.group_size);
          const int64_t pos = w.type == QType::Affine4 ? qk::affine4_pos(e, k) : e;
          const float d = reinterpret_cast<const float*>(row + lay.off_d)[e / 32];
          v = static_cast<double>(d) * reinterpret_cast<const int8_t*>(row)[pos];
          break;
        }
        default: {
          const auto& b = reinterpret_cast<const qk::block_q8_0a*>(row)[e / 32];
          v = static_cast<double>(b.d) * b.qs[e % 32];
        }
      }
      xt[r * k + e] = v;
    }
  }
  return xt;
}

// Activations in `xt` storage: blocks of varied magnitude, some all-zero and
// some below the tiny-amax cut-off.
std::vector<uint8_t> make_x(int64_t m, int64_t k, FType xt) {
  std::vector<uint8_t> x;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < k / 32; ++b) {
      const int kind = static_cast<int>(rng() % 16);
      const double mag = kind == 0 ? 0.0 : kind == 1 ? 1e-35 : std::pow(10.0, uniform(-3, 2));
      for (int i = 0; i < 32; ++i) {
        store_float(x, xt, static_cast<float>(mag * std::normal_distribution<double>(0, 1)(rng)));
      }
    }
  }
  return x;
}

std::vector<float> run(const QWeightView& w, const uint8_t* x, FType xt, int64_t m, KernelLevel l) {
  std::vector<float> y(static_cast<size_t>(m * w.n));
  std::vector<uint8_t> ws(qmatmul_workspace_bytes(w, m));
  qmatmul(w, x, xt, m, y.data(), FType::F32, l, ws.data());
  return y;
}

std::string case_name(const QWeightView& w, int64_t m, FType xt, KernelLevel l) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s n=%lld k=%lld gs=%d st=%d m=%lld x=%d %s", qtype_info(w.type).name,
                static_cast<long long>(w.n), static_cast<long long>(w.k), w.group_size, static_cast<int>(w.scale_type),
                static_cast<long long>(m), static_cast<int>(xt), level_name(l));
  return buf;
}

void check_case(const Weight& wt, int64_t m, FType xt, bool thread_check) {
  const QWeightView& w = wt.view;
  const int64_t k = w.k, n = w.n;
  const size_t item = xt == FType::F32 ? 4 : 2;
  const std::vector<uint8_t> x = make_x(m, k, xt);
  const size_t ab = act_row_bytes(w) * static_cast<size_t>(m);

  std::vector<uint8_t> acts_ref(ab);
  quantize_activations(w, x.data(), xt, m, acts_ref.data(), KernelLevel::Scalar);
  std::vector<float> wf(static_cast<size_t>(n * k));
  dequantize(w, wf.data());
  const std::vector<double> wabs = weight_terms(wt, wf), xq = act_values(w, acts_ref, m);
  const double nt = static_cast<double>(k / 32 + 16), u = std::ldexp(1.0, -24), gamma = nt * u / (1 - nt * u);
  std::vector<double> yq(static_cast<size_t>(m * n)), tol(yq.size());
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, t = 0;
      for (int64_t e = 0; e < k; ++e) {
        s += xq[r * k + e] * wf[j * k + e];
        t += std::fabs(xq[r * k + e]) * wabs[j * k + e];
      }
      yq[r * n + j] = s;
      tol[r * n + j] = gamma * t;
    }
  }

  std::vector<std::vector<float>> outs;
  for (KernelLevel l : available_levels()) {
    const std::string name = case_name(w, m, xt, l);
    std::vector<uint8_t> acts(ab);
    quantize_activations(w, x.data(), xt, m, acts.data(), l);
    ++checks;
    if (acts != acts_ref) fail(name + ": activation bytes differ from scalar");

    const std::vector<float> y = run(w, x.data(), xt, m, l);
    for (size_t i = 0; i < y.size(); ++i) {
      const double err = std::fabs(y[i] - yq[i]);
      ++checks;
      if (!(err <= tol[i])) {
        fail(name + ": |y - y_q| = " + std::to_string(err) + " > " + std::to_string(tol[i]) + " at " + std::to_string(i));
        break;
      }
      if (tol[i] > 0) worst_ratio = std::max(worst_ratio, err / tol[i]);
    }
    // batch invariance: each row alone, and the rows shifted by one tile position
    for (int64_t r = 0; r < m && m > 1; ++r) {
      const std::vector<float> one = run(w, x.data() + r * k * item, xt, 1, l);
      ++checks;
      if (std::memcmp(one.data(), y.data() + r * n, n * 4) != 0) fail(name + ": row " + std::to_string(r) + " alone differs");
    }
    if (m > 1) {
      const std::vector<float> rest = run(w, x.data() + k * item, xt, m - 1, l);
      ++checks;
      if (std::memcmp(rest.data(), y.data() + n, rest.size() * 4) != 0) fail(name + ": rows 1.. differ");
    }
    if (thread_check) {
      ThreadPool& pool = ThreadPool::global();
      const int saved = pool.num_threads();
      for (int t : {1, 3}) {
        pool.set_num_threads(t);
        ++checks;
        if (run(w, x.data(), xt, m, l) != y) fail(name + ": differs with " + std::to_string(t) + " threads");
      }
      pool.set_num_threads(saved);
    }
    if (l == KernelLevel::Neon || l == KernelLevel::NeonDot) outs.push_back(y);
  }
  if (outs.size() == 2) {
    ++checks;
    if (outs[0] != outs[1]) fail(case_name(w, m, xt, KernelLevel::Neon) + ": SDOT and baseline NEON builds differ");
  }
}

// inf, NaN and huge inputs: no crash, and the same activation bytes everywhere.
void check_non_finite(const Weight& wt) {
  const QWeightView& w = wt.view;
  std::vector<float> x(static_cast<size_t>(3 * w.k), 0.25f);
  x[5] = INFINITY;
  x[w.k + 40] = NAN;
  for (int64_t e = 0; e < w.k; ++e) x[2 * w.k + e] = 3e38f;
  std::vector<uint8_t> ref(act_row_bytes(w) * 3), got(ref.size());
  quantize_activations(w, x.data(), FType::F32, 3, ref.data(), KernelLevel::Scalar);
  for (KernelLevel l : available_levels()) {
    quantize_activations(w, x.data(), FType::F32, 3, got.data(), l);
    ++checks;
    if (got != ref) fail(case_name(w, 3, FType::F32, l) + ": non-finite activation bytes differ");
    run(w, reinterpret_cast<const uint8_t*>(x.data()), FType::F32, 3, l);
  }
}

void print_features() {
  const CpuFeatures& f = cpu_features();
  std::printf("arch=%s neon=%d neon_dotprod=%d neon_i8mm=%d avx2=%d kernel_level=%s\nlevels=", f.arch.c_str(), f.neon,
              f.neon_dotprod, f.neon_i8mm, f.avx2, kernel_level().c_str());
  const auto levels = available_levels();
  for (size_t i = 0; i < levels.size(); ++i) std::printf("%s%s", i ? "," : "", level_name(levels[i]));
  std::printf("\n");
}

int force_dotprod() {
  const qk::IsaKernels* kern = qk::neon_dotprod_kernels();
  if (kern == nullptr) {
    std::printf("no SDOT kernels in this build\n");
    return 2;
  }
  const Weight wt = make_weight(QType::Q8_0, 4, 64, 0, FType::F32);
  const std::vector<uint8_t> x = make_x(1, 64, FType::F32);
  std::vector<uint8_t> acts(act_row_bytes(wt.view));
  quantize_activations(wt.view, x.data(), FType::F32, 1, acts.data(), KernelLevel::Scalar);
  float res[4];
  kern->tile[static_cast<int>(QType::Q8_0)](wt.view, acts.data(), static_cast<int64_t>(acts.size()), 0, 4, 1, res);
  std::printf("SDOT kernels ran: %g\n", static_cast<double>(res[0]));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "sweep";
  if (mode == "features") {
    print_features();
    return 0;
  }
  if (mode == "force-dotprod") return force_dotprod();
  print_features();

  const QType gguf[] = {QType::Q4_0, QType::Q5_0, QType::Q8_0, QType::Q4_K, QType::Q6_K};
  const int64_t ms[] = {1, 2, 3, 4, 7, 8, 16};
  const int64_t ns[] = {1, 7, 64, 130};  // odd/even, several column tiles
  const FType xts[] = {FType::F32, FType::F16, FType::BF16};
  long cases = 0;
  for (QType t : gguf) {
    const bool kq = t == QType::Q4_K || t == QType::Q6_K;
    const std::vector<int64_t> ks = kq ? std::vector<int64_t>{256, 512, 768} : std::vector<int64_t>{32, 64, 96, 256, 640};
    for (int64_t k : ks) {
      for (int64_t n : ns) {
        const Weight wt = make_weight(t, n, k, 0, FType::F32);
        for (int64_t m : ms) {
          check_case(wt, m, xts[cases % 3], n == 7 && (m == 3 || m == 16));
          ++cases;
        }
      }
    }
    check_non_finite(make_weight(t, 9, kq ? 256 : 64, 0, FType::F32));
  }
  for (QType t : {QType::Affine4, QType::Affine8}) {
    for (int gs : {32, 64, 128}) {
      // k = gs: one group; 3*gs = 96 for gs 32: affine4's trailing half chunk
      for (int64_t k : {static_cast<int64_t>(gs), int64_t{3} * gs, int64_t{384}, int64_t{640}}) {
        for (int64_t n : ns) {
          const Weight wt = make_weight(t, n, k, gs, xts[cases % 3]);
          for (int64_t m : ms) {
            check_case(wt, m, xts[(cases + 1) % 3], n == 7 && (m == 3 || m == 16));
            ++cases;
          }
        }
      }
    }
    check_non_finite(make_weight(t, 9, 128, 64, FType::F16));
  }
  std::printf("cases=%ld checks=%ld failures=%d worst_err_over_bound=%.3g\n", cases, checks, failures, worst_ratio);
  return failures == 0 ? 0 : 1;
}
