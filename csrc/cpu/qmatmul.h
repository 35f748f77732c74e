#pragma once
// Quantized matmul and dequantization on the CPU: y[m, n] = sum_k x[m, k] * W[n, k]
// with W kept in its storage format (GGUF blocks or MLX affine codes).
//
// No MLX here: csrc/ops/qmatmul.cpp validates and hands raw pointers to these
// functions from inside the MLX CPU stream. Callers guarantee valid, in-bounds
// views; nothing below throws.
//
// Method (the same for every format and instruction set):
//  1. every row of x is quantized once to 8-bit blocks (scale = amax/127,
//     codes = round-half-even(x * 127/amax)), per 32 elements for the legacy and
//     affine formats and per 256 (Q8_K) for the K-quants;
//  2. each weight block is dotted with its activation block in integers, then
//     scaled by the product of the two fp32 scales and accumulated in fp32;
//  3. threads split the output columns n; each y[m, n] is computed by one
//     sequence of operations that does not depend on M, the other rows, the
//     tile it falls in or the thread count (batch and thread invariance).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tinyfast::cpu {

enum class QType : int { Q4_0, Q5_0, Q8_0, Q4_K, Q6_K, Affine4, Affine8 };
constexpr int kNumQTypes = 7;

// Element types of x, of the output and of affine scales/biases.
enum class FType : int { F32, F16, BF16 };

// Neon: baseline armv8-a NEON; NeonDot: NEON with the ARMv8.2 SDOT instruction;
// AVX512: AVX-512 F/BW/VL + VNNI (with AVX2, FMA, F16C).
enum class KernelLevel : int { Scalar, AVX2, Neon, NeonDot, AVX512 };

struct QTypeInfo {
  const char* name;   // "q4_0", ..., "affine4"
  int block_elems;    // elements per storage block (affine: elements per byte group of 32)
  int block_bytes;    // bytes per storage block (affine: code bytes per 32 elements)
  int act_block;      // activation quantization block: 32 or 256
};
const QTypeInfo& qtype_info(QType t);

// A weight [n, k]. GGUF formats: `data` holds n rows of k/block_elems blocks.
// Affine: `data` holds n rows of k*bits/8 code bytes (MLX's uint32 words,
// little-endian, first element in the lowest bits) and scales/biases hold
// n rows of k/group_size values of `scale_type`.
struct QWeightView {
  QType type = QType::Q4_0;
  int64_t n = 0, k = 0;
  const uint8_t* data = nullptr;
  const void* scales = nullptr;
  const void* biases = nullptr;
  FType scale_type = FType::F32;
  int group_size = 0;
  int64_t row_bytes() const;  // bytes of one row of `data`
};

// Kernel levels compiled in and usable on this CPU, best first.
std::vector<KernelLevel> available_levels();
KernelLevel default_level();  // AVX512 if VNNI, else AVX2; neon -> NeonDot if SDOT, else Neon; else scalar
const char* level_name(KernelLevel l);

// Scratch qmatmul needs for m_rows rows of x (the quantized activations).
size_t qmatmul_workspace_bytes(const QWeightView& w, int64_t m_rows);

// y[m, :] for m in [0, m_rows): x is [m_rows, k] of x_type, y is [m_rows, n] of
// y_type; workspace holds qmatmul_workspace_bytes(w, m_rows) bytes.
void qmatmul(const QWeightView& w, const void* x, FType x_type, int64_t m_rows, void* y, FType y_type,
             KernelLevel level, uint8_t* workspace);

// W as float32 [n, k], bit-identical to the NumPy reference (same fp32 operation order).
void dequantize(const QWeightView& w, float* out);

// Test hook: the quantized activation rows exactly as the kernels read them.
size_t act_row_bytes(const QWeightView& w);
void quantize_activations(const QWeightView& w, const void* x, FType x_type, int64_t m_rows, uint8_t* out,
                          KernelLevel level);

// Reads `bytes` bytes with the kernels' thread pool and returns a checksum: the
// in-run memory bandwidth peer for benchmarks.
uint64_t stream_read(const uint8_t* data, size_t bytes);

}  // namespace tinyfast::cpu
