#include "cpu/cpu_features.h"

#include <cstdlib>
#include <sstream>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace tinyfast::cpu {
namespace {

int count_cores() {
#if defined(__linux__)
  // Respect taskset/cgroup affinity rather than the machine's total.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

#if defined(__APPLE__) && defined(__aarch64__)
bool apple_sysctl_flag(const char* name) {
  int value = 0;
  size_t size = sizeof(value);
  return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
  f.num_cores = count_cores();
#if defined(__x86_64__) || defined(_M_X64)
  f.arch = "x86_64";
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#if defined(__GNUC__) && (__GNUC__ >= 11 || defined(__clang__))
  f.avxvnni = __builtin_cpu_supports("avxvnni");
#endif
#elif defined(__aarch64__)
  f.arch = "arm64";
  f.neon = true;  // Advanced SIMD is mandatory on AArch64
#if defined(__linux__)
  unsigned long hw = getauxval(AT_HWCAP);
  unsigned long hw2 = getauxval(AT_HWCAP2);
  f.neon_dotprod = (hw & HWCAP_ASIMDDP) != 0;
#ifdef HWCAP2_I8MM
  f.neon_i8mm = (hw2 & HWCAP2_I8MM) != 0;
#else
  (void)hw2;
#endif
#elif defined(__APPLE__)
  f.neon_dotprod = apple_sysctl_flag("hw.optional.arm.FEAT_DotProd");
  f.neon_i8mm = apple_sysctl_flag("hw.optional.arm.FEAT_I8MM");
#endif
#else
  f.arch = "other";
#endif
  return f;
}

void apply_disable_list(CpuFeatures& f, const char* list) {
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name == "avx2") f.avx2 = false;
    else if (name == "fma") f.fma = false;
    else if (name == "f16c") f.f16c = false;
    else if (name == "avx512f") f.avx512f = false;
    else if (name == "avx512bw") f.avx512bw = false;
    else if (name == "avx512vl") f.avx512vl = false;
    else if (name == "avx512vnni") f.avx512vnni = false;
    else if (name == "avxvnni") f.avxvnni = false;
    else if (name == "neon") f.neon = false;
    else if (name == "neon_dotprod") f.neon_dotprod = false;
    else if (name == "neon_i8mm") f.neon_i8mm = false;
  }
  // Dependent features go with their base.
  if (!f.avx512f) f.avx512bw = f.avx512vl = f.avx512vnni = false;
  if (!f.avx2) f.avxvnni = false;
  if (!f.neon) f.neon_dotprod = f.neon_i8mm = false;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f = detect();
    if (const char* off = std::getenv("TINYFAST_CPU_DISABLE")) apply_disable_list(f, off);
    return f;
  }();
  return features;
}

std::string kernel_level() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512f && f.avx512bw && f.avx512vl && f.fma && f.f16c) return "avx512";
  if (f.avx2 && f.fma && f.f16c) return "avx2";
  if (f.neon) return "neon";
  return "scalar";
}

}  // namespace tinyfast::cpu
