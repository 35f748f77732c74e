#pragma once
// Quantized matmul and dequantization as MLX primitives.
//
//   qmatmul(x [..., K], W [N, K] quantized) -> x @ dequant(W).T   [..., N], dtype of x
//   dequantize(W)                           -> float32 [N, K]
//
// W is given as its storage arrays: {blocks uint8 [N, row_bytes]} for the GGUF
// formats, {codes uint32 [N, K*bits/32], scales [N, K/g], biases [N, K/g]} for
// MLX affine. The op functions validate everything (bad input raises before a
// graph node exists); eval_cpu only hands pointers to csrc/cpu/qmatmul.cpp.
#include <mlx/array.h>
#include <mlx/primitives.h>
#include <mlx/utils.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/qmatmul.h"

namespace tinyfast::ops {

namespace mx = mlx::core;

// Wrong dtype of an argument (TypeError in Python); shape/format problems
// are std::invalid_argument (ValueError).
struct DTypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct QuantSpec {
  cpu::QType type = cpu::QType::Q4_0;
  int64_t n = 0, k = 0;
  int group_size = 0;  // affine only
  bool operator==(const QuantSpec&) const = default;
};

// "q4_0", "q5_0", "q8_0", "q4_k", "q6_k", "affine4", "affine8" (case-insensitive).
cpu::QType parse_qtype(const std::string& name);
// "auto" (best available), "scalar", "avx2"; ValueError if not usable here.
cpu::KernelLevel parse_kernel(const std::string& name);

mx::array qmatmul(const mx::array& x, const std::vector<mx::array>& weights, const QuantSpec& spec,
                  cpu::KernelLevel level, mx::StreamOrDevice s = {});
mx::array dequantize(const std::vector<mx::array>& weights, const QuantSpec& spec, mx::StreamOrDevice s = {});

// Throws if the format, shape or group size cannot be used.
void check_spec(const QuantSpec& spec);

// Checks the storage arrays against the spec (dtype, shape); returns them
// made row-contiguous (a no-op for the usual evaluated, contiguous weights).
std::vector<mx::array> checked_weights(const std::vector<mx::array>& weights, const QuantSpec& spec, mx::Stream s);

class QMatmul : public mx::UnaryPrimitive {
 public:
  QMatmul(mx::Stream stream, QuantSpec spec, cpu::KernelLevel level)
      : mx::UnaryPrimitive(stream), spec_(spec), level_(level) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  const char* name() const override { return "TinyfastQMatmul"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  QuantSpec spec_;
  cpu::KernelLevel level_;
};

class QDequantize : public mx::UnaryPrimitive {
 public:
  QDequantize(mx::Stream stream, QuantSpec spec) : mx::UnaryPrimitive(stream), spec_(spec) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  const char* name() const override { return "TinyfastDequantize"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  QuantSpec spec_;
};

}  // namespace tinyfast::ops
