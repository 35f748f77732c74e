// Just enough of the Metal Shading Language, in C++ (clang), to compile the
// kernels in metal/ on a CPU: included first (-include) in every emulated
// translation unit. Semantics follow the MSL specification; lanes are the
// fibers of runtime.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "launch.h"
#include "runtime.h"

// Address spaces are plain memory here.
#define device
#define constant
#define threadgroup
#define thread

typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
typedef unsigned long ulong;

// half / bfloat: 16-bit storage; arithmetic promotes to float and the result
// rounds (to nearest even) when stored back. clang on x86-64 has no usable
// native half type for return values, hence the structs.
struct half {
  uint16_t bits;
  half() = default;
  half(float f) : bits(tfemu::float_to_half_bits(f)) {}
  operator float() const { return tfemu::half_bits_to_float(bits); }
};

struct bfloat {
  uint16_t bits;
  bfloat() = default;
  bfloat(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((x >> 16) | 0x40u);
    } else {
      x += 0x7fffu + ((x >> 16) & 1u);
      bits = static_cast<uint16_t>(x >> 16);
    }
  }
  operator float() const {
    uint32_t x = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

#define TF_EMU_VEC(T, N, name) typedef T name __attribute__((ext_vector_type(N)));
TF_EMU_VEC(float, 2, float2)
TF_EMU_VEC(float, 3, float3)
TF_EMU_VEC(float, 4, float4)
TF_EMU_VEC(int, 2, int2)
TF_EMU_VEC(int, 3, int3)
TF_EMU_VEC(int, 4, int4)
TF_EMU_VEC(uint, 2, uint2)
TF_EMU_VEC(uint, 3, uint3)
TF_EMU_VEC(uint, 4, uint4)
TF_EMU_VEC(ushort, 2, ushort2)
TF_EMU_VEC(ushort, 4, ushort4)
TF_EMU_VEC(uchar, 2, uchar2)
TF_EMU_VEC(uchar, 4, uchar4)
TF_EMU_VEC(ulong, 2, ulong2)
#undef TF_EMU_VEC

namespace metal {

enum class mem_flags : int { mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4 };

// ---- math ---------------------------------------------------------------------
#define TF_EMU_MATH1(name, impl) \
  inline float name(float x) { return impl(x); }
TF_EMU_MATH1(exp, std::exp)
TF_EMU_MATH1(exp2, std::exp2)
TF_EMU_MATH1(log, std::log)
TF_EMU_MATH1(tanh, std::tanh)
TF_EMU_MATH1(sqrt, std::sqrt)
TF_EMU_MATH1(abs, std::fabs)
TF_EMU_MATH1(floor, std::floor)
TF_EMU_MATH1(ceil, std::ceil)
inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline float fma(float a, float b, float c) { return std::fma(a, b, c); }
inline bool isinf(float x) { return std::isinf(x); }
inline bool isnan(float x) { return std::isnan(x); }
template <typename T>
inline T max(T a, T b) { return a > b ? a : b; }
template <typename T>
inline T min(T a, T b) { return a < b ? a : b; }
template <typename T>
inline T clamp(T x, T lo, T hi) { return min(max(x, lo), hi); }
template <typename T>
inline T select(T a, T b, bool c) { return c ? b : a; }
template <typename To, typename From>
inline To as_type(From x) {
  static_assert(sizeof(To) == sizeof(From), "as_type needs equal sizes");
  To out;
  std::memcpy(&out, &x, sizeof out);
  return out;
}
inline float dot(float2 a, float2 b) { return a.x * b.x + a.y * b.y; }
inline float dot(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }
#undef TF_EMU_MATH1

namespace fast {
inline float exp(float x) { return std::exp(x); }
inline float exp2(float x) { return std::exp2(x); }
inline float tanh(float x) { return std::tanh(x); }
}  // namespace fast
namespace precise {
inline float exp(float x) { return std::exp(x); }
inline float tanh(float x) { return std::tanh(x); }
}  // namespace precise

template <typename T>
struct numeric_limits;
template <>
struct numeric_limits<float> {
  static constexpr float infinity() { return __builtin_inff(); }
  static constexpr float max() { return 3.402823466e+38f; }
};

// ---- barriers -----------------------------------------------------------------
// noinline: the return address identifies the call site, so lanes waiting at
// two different barriers are told apart.
__attribute__((noinline)) inline void threadgroup_barrier(mem_flags) {
  tfemu::sync(tfemu::Sync::ThreadgroupBarrier, __builtin_return_address(0));
}
__attribute__((noinline)) inline void simdgroup_barrier(mem_flags) {
  tfemu::sync(tfemu::Sync::SimdBarrier, __builtin_return_address(0));
}

// ---- SIMD-group functions ---------------------------------------------------
namespace detail {
template <typename T>
inline const T& slot(int lane) {
  return *static_cast<const T*>(tfemu::simd_slot_for_read(lane));
}
template <typename T>
inline void publish(const T& x, const void* site) {
  static_assert(sizeof(T) <= tfemu::kSlotBytes, "value too large for a SIMD collective");
  std::memcpy(tfemu::simd_slot_for_write(), &x, sizeof(T));
  tfemu::sync(tfemu::Sync::Simd, site);
}
}  // namespace detail

// Reductions add in lane order (the hardware's tree order differs; the parity
// tests' tolerances cover it).
template <typename T>
__attribute__((noinline)) T simd_sum(T x) {
  detail::publish(x, __builtin_return_address(0));
  T acc = detail::slot<T>(0);
  for (int i = 1; i < tfemu::lanes_in_simdgroup(); ++i) acc = acc + detail::slot<T>(i);
  return acc;
}
template <typename T>
__attribute__((noinline)) T simd_max(T x) {
  detail::publish(x, __builtin_return_address(0));
  T acc = detail::slot<T>(0);
  for (int i = 1; i < tfemu::lanes_in_simdgroup(); ++i) acc = max(acc, detail::slot<T>(i));
  return acc;
}
template <typename T>
__attribute__((noinline)) T simd_min(T x) {
  detail::publish(x, __builtin_return_address(0));
  T acc = detail::slot<T>(0);
  for (int i = 1; i < tfemu::lanes_in_simdgroup(); ++i) acc = min(acc, detail::slot<T>(i));
  return acc;
}
// Reading an inactive or out-of-range lane is undefined in Metal; here it is
// an error so such a kernel cannot pass by accident.
template <typename T>
inline T simd_read_lane(int src) {
  if (src < 0 || src >= tfemu::lanes_in_simdgroup()) {
    T poison;
    std::memset(&poison, 0xFF, sizeof poison);
    return poison;
  }
  return detail::slot<T>(src);
}
template <typename T>
__attribute__((noinline)) T simd_shuffle(T x, ushort lane) {
  detail::publish(x, __builtin_return_address(0));
  return simd_read_lane<T>(lane);
}
template <typename T>
__attribute__((noinline)) T simd_broadcast(T x, ushort lane) {
  detail::publish(x, __builtin_return_address(0));
  return simd_read_lane<T>(lane);
}
template <typename T>
__attribute__((noinline)) T simd_shuffle_xor(T x, ushort mask) {
  detail::publish(x, __builtin_return_address(0));
  return simd_read_lane<T>(tfemu::lane_in_simdgroup() ^ mask);
}
template <typename T>
__attribute__((noinline)) T simd_shuffle_down(T x, ushort delta) {
  detail::publish(x, __builtin_return_address(0));
  const int src = tfemu::lane_in_simdgroup() + delta;
  return src < tfemu::lanes_in_simdgroup() ? detail::slot<T>(src) : x;
}
template <typename T>
__attribute__((noinline)) T simd_shuffle_up(T x, ushort delta) {
  detail::publish(x, __builtin_return_address(0));
  const int src = tfemu::lane_in_simdgroup() - delta;
  return src >= 0 ? detail::slot<T>(src) : x;
}
template <typename T>
__attribute__((noinline)) T simd_prefix_exclusive_sum(T x) {
  detail::publish(x, __builtin_return_address(0));
  T acc = T(0);
  for (int i = 0; i < tfemu::lane_in_simdgroup(); ++i) acc = acc + detail::slot<T>(i);
  return acc;
}

// ---- simdgroup matrices -----------------------------------------------------
// Each lane keeps the whole tile: with every lane of a simdgroup executing the
// same operations (checked by the runtime) the copies stay equal, and loads
// still read threadgroup memory at the moment this lane runs, so a missing
// barrier before a simdgroup_load is visible. The lanes are not in lockstep:
// storing a tile over memory that other lanes of the simdgroup still have to
// load needs a simdgroup_barrier in between here (conservative: such code is
// flagged, never passed by accident).
template <typename T, int Cols, int Rows>
struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "only 8x8 tiles are emulated");
  T v[Rows][Cols];
  simdgroup_matrix() = default;
  explicit simdgroup_matrix(T x) {
    for (auto& r : v)
      for (auto& e : r) e = x;
  }
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;

enum : int { kMatFill = 1, kMatLoad, kMatStore, kMatMul, kMatMulAcc };

template <typename T, int C, int R>
inline simdgroup_matrix<T, C, R> make_filled_simdgroup_matrix(T x) {
  tfemu::note_matrix_op(kMatFill);
  return simdgroup_matrix<T, C, R>(x);
}

// m[r][c] = src[(origin.y + r) * elements_per_row + origin.x + c], or with
// transpose_matrix m[r][c] = src[(origin.y + c) * elements_per_row + origin.x + r].
template <typename T, typename S>
inline void simdgroup_load(simdgroup_matrix<T, 8, 8>& m, const S* src, ulong elements_per_row = 8,
                           ulong2 origin = ulong2(0), bool transpose_matrix = false) {
  tfemu::note_matrix_op(kMatLoad);
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 8; ++c) {
      const ulong row = transpose_matrix ? c : r, col = transpose_matrix ? r : c;
      m.v[r][c] = static_cast<T>(src[(origin.y + row) * elements_per_row + origin.x + col]);
    }
}

template <typename T, typename S>
inline void simdgroup_store(const simdgroup_matrix<T, 8, 8>& m, S* dst, ulong elements_per_row = 8,
                            ulong2 origin = ulong2(0), bool transpose_matrix = false) {
  tfemu::note_matrix_op(kMatStore);
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 8; ++c) {
      const ulong row = transpose_matrix ? c : r, col = transpose_matrix ? r : c;
      dst[(origin.y + row) * elements_per_row + origin.x + col] = static_cast<S>(m.v[r][c]);
    }
}

// d = a * b + c, accumulated in float (row by column, in k order).
template <typename T>
inline void simdgroup_multiply_accumulate(simdgroup_matrix<T, 8, 8>& d, const simdgroup_matrix<T, 8, 8>& a,
                                          const simdgroup_matrix<T, 8, 8>& b, const simdgroup_matrix<T, 8, 8>& c) {
  tfemu::note_matrix_op(kMatMulAcc);
  simdgroup_matrix<T, 8, 8> out;
  for (int r = 0; r < 8; ++r)
    for (int col = 0; col < 8; ++col) {
      float acc = static_cast<float>(c.v[r][col]);
      for (int k = 0; k < 8; ++k) acc += static_cast<float>(a.v[r][k]) * static_cast<float>(b.v[k][col]);
      out.v[r][col] = static_cast<T>(acc);
    }
  d = out;
}

template <typename T>
inline void simdgroup_multiply(simdgroup_matrix<T, 8, 8>& d, const simdgroup_matrix<T, 8, 8>& a,
                               const simdgroup_matrix<T, 8, 8>& b) {
  tfemu::note_matrix_op(kMatMul);
  simdgroup_matrix<T, 8, 8> out;
  for (int r = 0; r < 8; ++r)
    for (int col = 0; col < 8; ++col) {
      float acc = 0.0f;
      for (int k = 0; k < 8; ++k) acc += static_cast<float>(a.v[r][k]) * static_cast<float>(b.v[k][col]);
      out.v[r][col] = static_cast<T>(acc);
    }
  d = out;
}

}  // namespace metal

using namespace metal;

// Entry-point instantiation (metal/kernels/defines.h uses it): on the GPU a
// [[host_name]] template instantiation, here a registration of the same
// function template instance with the emulator's launcher table (launch.h).
#define TF_EMU_CAT2(a, b) a##b
#define TF_EMU_CAT(a, b) TF_EMU_CAT2(a, b)
#define TF_THREADGROUP_BUFFER(i)
#define TF_INSTANTIATE(name, func, ...) \
  static ::tfemu::Registrar TF_EMU_CAT(tf_emu_reg_, __COUNTER__){name, &func<__VA_ARGS__>};
