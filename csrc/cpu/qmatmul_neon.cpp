// Baseline NEON kernels (armv8-a, no extra flags): every arm64 CPU runs them.
// Also home of the scratch both NEON builds use (see qmatmul_neon.h for why
// it cannot live in the header).
#if defined(__aarch64__)

#include <vector>

#define TF_QMM_NEON_NS neon
#define TF_QMM_NEON_LEVEL KernelLevel::Neon
#include "cpu/qmatmul_neon.h"

namespace tinyfast::cpu::qk {

float* neon_scratch(int64_t count) {
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(count)) buf.resize(static_cast<size_t>(count));
  return buf.data();
}

const IsaKernels* neon_kernels() { return neon::kernels(); }

}  // namespace tinyfast::cpu::qk

#else  // not arm64: no NEON kernels in this build

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk {
const IsaKernels* neon_kernels() { return nullptr; }
}  // namespace tinyfast::cpu::qk

#endif
