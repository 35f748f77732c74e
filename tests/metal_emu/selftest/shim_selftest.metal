// Tiny kernels that pin down the emulator's own semantics (test_shim.py):
// SIMD-group functions, threadgroup memory and barriers, simdgroup matrices,
// half / bfloat conversions and vector swizzles, and the errors for
// divergent barriers / collectives. Not part of tinyfast.metallib.
#include "kernels/defines.h"

#define TF_SELFTEST_IDS                                                                           \
  uint3 tgid [[threadgroup_position_in_grid]], uint3 tid [[thread_position_in_threadgroup]],     \
      uint3 tgsize [[threads_per_threadgroup]], uint lane [[thread_index_in_simdgroup]],         \
      uint sg [[simdgroup_index_in_threadgroup]]

// out[i][0:8] = sum, max, min, shuffle_xor 5, broadcast lane 3, shuffle_down 2,
// shuffle_up 1, prefix exclusive sum -- all within the simdgroup.
template <typename T>
[[kernel]] void selftest_simd(const device T* in [[buffer(0)]], device T* out [[buffer(1)]], TF_SELFTEST_IDS) {
  const uint i = tid.x;
  const T x = in[i];
  out[i * 8 + 0] = simd_sum(x);
  out[i * 8 + 1] = simd_max(x);
  out[i * 8 + 2] = simd_min(x);
  out[i * 8 + 3] = simd_shuffle_xor(x, 5);
  out[i * 8 + 4] = simd_broadcast(x, 3);
  out[i * 8 + 5] = simd_shuffle_down(x, 2);
  out[i * 8 + 6] = simd_shuffle_up(x, 1);
  out[i * 8 + 7] = simd_prefix_exclusive_sum(x);
}

// Reverses the threadgroup's inputs through threadgroup memory; Barrier = 0
// leaves the barrier out (a race the schedule must expose).
template <int Barrier>
[[kernel]] void selftest_reverse(const device float* in [[buffer(0)]], device float* out [[buffer(1)]],
                                 threadgroup float* smem TF_THREADGROUP_BUFFER(0), TF_SELFTEST_IDS) {
  const uint i = tid.x, n = tgsize.x;
  smem[i] = in[tgid.x * n + i];
  if (Barrier) threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tgid.x * n + i] = smem[n - 1 - i];
}

// A threadgroup barrier only the first half of the threads reaches.
template <int Unused>
[[kernel]] void selftest_divergent_barrier(device float* out [[buffer(0)]], TF_SELFTEST_IDS) {
  if (tid.x < tgsize.x / 2) threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid.x] = 1.0f;
}

// A SIMD collective only the odd lanes reach.
template <int Unused>
[[kernel]] void selftest_divergent_simd(device float* out [[buffer(0)]], TF_SELFTEST_IDS) {
  float v = 0.0f;
  if (lane % 2) v = simd_sum(1.0f);
  out[tid.x] = v;
}

// c = a * b + c for one 8x8 tile, through threadgroup memory.
template <int Transpose>
[[kernel]] void selftest_matrix(const device float* a [[buffer(0)]], const device float* b [[buffer(1)]],
                                device float* c [[buffer(2)]], threadgroup float* smem TF_THREADGROUP_BUFFER(0),
                                TF_SELFTEST_IDS) {
  for (uint k = lane; k < 192; k += 32) smem[k] = k < 64 ? a[k] : (k < 128 ? b[k - 64] : c[k - 128]);
  simdgroup_barrier(mem_flags::mem_threadgroup);
  simdgroup_float8x8 ma, mb, mc;
  simdgroup_load(ma, smem, 8);
  simdgroup_load(mb, smem + 64, 8, ulong2(0), Transpose != 0);
  simdgroup_load(mc, smem + 128, 8);
  simdgroup_multiply_accumulate(mc, ma, mb, mc);
  // The emulator runs matrix loads/stores per lane, not in lockstep: storing
  // over a tile other lanes still load needs a barrier (see metal_shim.h).
  simdgroup_barrier(mem_flags::mem_threadgroup);
  simdgroup_store(mc, smem + 128, 8);
  simdgroup_barrier(mem_flags::mem_threadgroup);
  for (uint k = lane; k < 64; k += 32) c[k] = smem[128 + k];
}

// half / bfloat stores (round to nearest even) and a float4 swizzle.
template <int Unused>
[[kernel]] void selftest_types(const device float* in [[buffer(0)]], device half* h [[buffer(1)]],
                               device bfloat* b [[buffer(2)]], device float* swz [[buffer(3)]], TF_SELFTEST_IDS) {
  const uint i = tid.x;
  h[i] = static_cast<half>(in[i]);
  b[i] = static_cast<bfloat>(in[i]);
  if (i % 4 == 0) {
    float4 v = {in[i], in[i + 1], in[i + 2], in[i + 3]};
    const float4 w = v.wzyx;
    for (int k = 0; k < 4; ++k) swz[i + k] = w[k];
  }
}

TF_INSTANTIATE("selftest_simd_float", selftest_simd, float)
TF_INSTANTIATE("selftest_simd_int", selftest_simd, int)
TF_INSTANTIATE("selftest_reverse", selftest_reverse, 1)
TF_INSTANTIATE("selftest_reverse_no_barrier", selftest_reverse, 0)
TF_INSTANTIATE("selftest_divergent_barrier", selftest_divergent_barrier, 0)
TF_INSTANTIATE("selftest_divergent_simd", selftest_divergent_simd, 0)
TF_INSTANTIATE("selftest_matrix", selftest_matrix, 0)
TF_INSTANTIATE("selftest_matrix_transposed", selftest_matrix, 1)
TF_INSTANTIATE("selftest_types", selftest_types, 0)
