// Included first by every kernel header. On the GPU it brings in the Metal
// standard library; in the CPU emulator (tests/metal_emu) the shim, included
// before this file, already provides the same names.
#pragma once

#ifdef __METAL_VERSION__
#include <metal_stdlib>
#include <metal_simdgroup_matrix>
using namespace metal;

// An entry point `func<Args...>` exported under the Metal function name
// `name`, which csrc/metal builds from the same table (kernel_names.h).
#define TF_INSTANTIATE(name, func, ...) \
  template [[host_name(name)]] [[kernel]] decltype(func<__VA_ARGS__>) func<__VA_ARGS__>;
// `threadgroup` is an (empty) macro in the emulator, so the attribute of a
// threadgroup-memory argument is spelled through this one.
#define TF_THREADGROUP_BUFFER(i) [[threadgroup(i)]]
#elif !defined(TF_INSTANTIATE)
#error "kernel headers need Metal or tests/metal_emu/metal_shim.h"
#endif

namespace tf {

// Element type <-> float. Everything inside the kernels is float32.
template <typename T>
inline float to_float(T x) {
  return static_cast<float>(x);
}
template <typename T>
inline T from_float(float x) {
  return static_cast<T>(x);
}

}  // namespace tf
