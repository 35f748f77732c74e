// Layer-op driver: splits rows over the thread pool and picks the row kernels
// built for the CPU (layer_ops_kernel.h: baseline here, AVX2/FMA/F16C in
// layer_ops_avx2.cpp).
#define TF_LAYER_NS baseline
#include "cpu/layer_ops_kernel.h"
#undef TF_LAYER_NS

#include <algorithm>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/thread_pool.h"

namespace tinyfast::cpu {

#if defined(__x86_64__) || defined(_M_X64)
namespace layer::avx2 {  // layer_ops_avx2.cpp
void rms_norm_rows(const RMSNormArgs& a, int64_t r0, int64_t r1);
void rope_rows(const RopeArgs& a, int64_t t0, int64_t t1);
void gated_act_range(const GatedActArgs& a, int64_t begin, int64_t end);
}  // namespace layer::avx2
#endif

namespace {

struct RowKernels {
  void (*rms_norm)(const RMSNormArgs&, int64_t, int64_t);
  void (*rope)(const RopeArgs&, int64_t, int64_t);
  void (*gated_act)(const GatedActArgs&, int64_t, int64_t);
};

const RowKernels& row_kernels() {
  static const RowKernels k = [] {
#if defined(__x86_64__) || defined(_M_X64)
    const std::string level = kernel_level();
    if (level == "avx2" || level == "avx512")
      return RowKernels{&layer::avx2::rms_norm_rows, &layer::avx2::rope_rows, &layer::avx2::gated_act_range};
#endif
    return RowKernels{&layer::baseline::rms_norm_rows, &layer::baseline::rope_rows,
                      &layer::baseline::gated_act_range};
  }();
  return k;
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
  const auto rows = row_kernels().rms_norm;
  for_rows(a.rows, a.dim, [&](int64_t r0, int64_t r1) { rows(a, r0, r1); });
}

void rope(const RopeArgs& a) {
  const auto rows = row_kernels().rope;
  for_rows(a.tokens, a.heads * a.head_dim * 8, [&](int64_t t0, int64_t t1) { rows(a, t0, t1); });
}

void gated_act(const GatedActArgs& a) {
  constexpr int64_t kChunk = 4096;  // a multiple of 8
  const auto range = row_kernels().gated_act;
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
  for_rows(chunks, kChunk * 8, [&](int64_t c0, int64_t c1) { range(a, c0 * kChunk, std::min(a.n, c1 * kChunk)); });
}

}  // namespace tinyfast::cpu
