// Eight-float vectors (GCC/Clang vector extensions) and a vector exp, shared
// by kernels that are compiled once per instruction set. Include this file
// *inside* the including file's anonymous namespace: every function then has
// internal linkage, so a copy compiled with -mavx2 can never be linked into a
// baseline caller. The includer provides <cstdint>, <cstring> and, when built
// with AVX2 + FMA, <immintrin.h>. In a baseline build the vectors lower to two
// SSE/NEON registers; vfmadd is a real FMA only when the build has FMA (and
// plain multiply-add otherwise, left unfused under -ffp-contract=off).

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

inline f32x8 vload(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void vstore(float* p, f32x8 v) { std::memcpy(p, &v, sizeof v); }
inline f32x8 vsplat(float x) { return f32x8{x, x, x, x, x, x, x, x}; }

inline f32x8 vfmadd(f32x8 a, f32x8 b, f32x8 c) {
#if defined(__AVX2__) && defined(__FMA__)
  return (f32x8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

inline f32x8 vmax(f32x8 a, f32x8 b) { return a > b ? a : b; }
inline f32x8 vmin(f32x8 a, f32x8 b) { return a < b ? a : b; }

// exp for x <= 88: Cephes-style range reduction and polynomial (~1 ulp);
// exp(0) == 1 and exp(-inf) == 0 exactly, which the online softmax relies on.
inline f32x8 vexp(f32x8 x) {
  const i32x8 underflow = x < vsplat(-87.0f);
  x = vmax(vmin(x, vsplat(88.0f)), vsplat(-87.0f));
  const f32x8 magic = vsplat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  f32x8 n = (x * vsplat(1.44269504088896341f) + magic) - magic;
  f32x8 r = x - n * vsplat(0.693359375f);
  r = r - n * vsplat(-2.12194440e-4f);
  f32x8 y = vsplat(1.9875691500e-4f);
  y = vfmadd(y, r, vsplat(1.3981999507e-3f));
  y = vfmadd(y, r, vsplat(8.3334519073e-3f));
  y = vfmadd(y, r, vsplat(4.1665795894e-2f));
  y = vfmadd(y, r, vsplat(1.6666665459e-1f));
  y = vfmadd(y, r, vsplat(5.0000001201e-1f));
  y = vfmadd(y, r * r, r) + vsplat(1.0f);
  i32x8 e = (__builtin_convertvector(n, i32x8) + 127) << 23;
  f32x8 res = y * (f32x8)e;
  return (f32x8)((i32x8)res & ~underflow);
}

// tanh(t) = sign(t) (1 - e) / (1 + e) with e = exp(-2|t|) in (0, 1]: no
// overflow for any t; absolute error a few ulp of 1.
inline f32x8 vtanh(f32x8 t) {
  const i32x8 sign = (i32x8)t & (int32_t)0x80000000;
  f32x8 at = (f32x8)((i32x8)t ^ sign);
  f32x8 e = vexp(at * vsplat(-2.0f));
  f32x8 th = (vsplat(1.0f) - e) / (vsplat(1.0f) + e);
  return (f32x8)((i32x8)th ^ sign);
}
