// NEON kernels with SDOT (compiled with -march=armv8.2-a+dotprod, CMakeLists.txt);
// chosen at run time only when cpu_features().neon_dotprod. Without the flag
// (a compiler that rejects it) this file builds no kernels and the baseline
// NEON ones are used.
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)

#define TF_QMM_NEON_NS neon_dotprod
#define TF_QMM_NEON_LEVEL KernelLevel::NeonDot
#include "cpu/qmatmul_neon.h"

namespace tinyfast::cpu::qk {
const IsaKernels* neon_dotprod_kernels() { return neon_dotprod::kernels(); }
}  // namespace tinyfast::cpu::qk

#else

#include "cpu/qmatmul_internal.h"

namespace tinyfast::cpu::qk {
const IsaKernels* neon_dotprod_kernels() { return nullptr; }
}  // namespace tinyfast::cpu::qk

#endif
