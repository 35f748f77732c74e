#pragma once
// The one place that asks the processor what it can do. Kernels are compiled
// for several instruction sets and pick one at run time from these flags, so a
// wheel built anywhere runs on any x86-64 or arm64 machine.
#include <string>
#include <vector>

namespace tinyfast::cpu {

struct CpuFeatures {
  std::string arch;  // "x86_64", "arm64" or "other"
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avxvnni = false;
  bool neon = false;
  bool neon_dotprod = false;
  bool neon_i8mm = false;
  int num_cores = 1;  // logical CPUs this process may run on
};

// Detected once; overrides from TINYFAST_CPU_DISABLE (comma separated flag
// names, e.g. "avx512f,avx2") are applied so slower paths can be tested on a
// fast machine.
const CpuFeatures& cpu_features();

// The best kernel level usable here: "avx512" (F+BW+VL), "avx2" (AVX2+FMA+F16C),
// "neon", or "scalar".
std::string kernel_level();

}  // namespace tinyfast::cpu
