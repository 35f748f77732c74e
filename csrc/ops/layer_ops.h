#pragma once
// Per-token layer ops as MLX primitives: rms_norm, rope (per-token positions of a
// ragged batch), gated_act (SwiGLU / GeGLU). MLX's CPU backend has no kernels for
// mx.fast.rms_norm / mx.fast.rope: they run as graphs of 7-15 elementwise ops,
// which costs ~100 dispatched ops per layer eagerly and, under mx.compile, C++
// kernels JIT-compiled on first use (~2 s each on a cold machine). One primitive
// per op avoids both.
#include <mlx/array.h>
#include <mlx/primitives.h>
#include <mlx/utils.h>

namespace tinyfast::ops {

namespace mx = mlx::core;

// x [..., dim] float32/float16/bfloat16; weight [dim] float32. Returns x's shape and dtype.
mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps, mx::StreamOrDevice s = {});

// x [tokens, heads, head_dim]; positions int32 [tokens]; inv_freq float32 [rotary_dims / 2].
// Rotates the first rotary_dims features of each head (halves, or interleaved pairs when
// traditional) by positions[t] * inv_freq, and multiplies them by scale.
mx::array rope(const mx::array& x, const mx::array& positions, const mx::array& inv_freq, int rotary_dims,
               bool traditional, float scale, mx::StreamOrDevice s = {});

// act(gate) * up, same shape and dtype; act is "silu", "gelu_tanh" or "gelu".
mx::array gated_act(const mx::array& gate, const mx::array& up, const std::string& act, mx::StreamOrDevice s = {});

class RMSNorm : public mx::Primitive {
 public:
  RMSNorm(mx::Stream stream, float eps) : mx::Primitive(stream), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "TinyfastRMSNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 private:
  float eps_;
};

class Rope : public mx::Primitive {
 public:
  Rope(mx::Stream stream, int rotary_dims, bool traditional, float scale)
      : mx::Primitive(stream), rotary_dims_(rotary_dims), traditional_(traditional), scale_(scale) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "TinyfastRope"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 private:
  int rotary_dims_;
  bool traditional_;
  float scale_;
};

class GatedActivation : public mx::Primitive {
 public:
  GatedActivation(mx::Stream stream, int act) : mx::Primitive(stream), act_(act) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "TinyfastGatedAct"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 private:
  int act_;
};

}  // namespace tinyfast::ops
