#pragma once
// CPU kernels of the per-token layer ops (see csrc/ops/layer_ops.h): RMSNorm,
// rotary embedding at per-token positions, gated activations. Every output
// element depends only on its own row (token), computed by the same sequence of
// float32 operations whatever the batch or thread count: batch invariant.
#include <cstdint>

namespace tinyfast::cpu {

enum class FloatType { f32, f16, bf16 };

struct RMSNormArgs {
  FloatType type = FloatType::f32;  // x and out
  const void* x = nullptr;          // [rows, dim], contiguous
  const float* weight = nullptr;    // [dim]
  void* out = nullptr;
  int64_t rows = 0, dim = 0;
  float eps = 1e-6f;
};
void rms_norm(const RMSNormArgs& a);

struct RopeArgs {
  FloatType type = FloatType::f32;
  const void* x = nullptr;           // [tokens, heads, head_dim], contiguous
  const int32_t* positions = nullptr;  // [tokens]
  const float* inv_freq = nullptr;   // [rotary_dims / 2]
  void* out = nullptr;
  int64_t tokens = 0, heads = 0, head_dim = 0, rotary_dims = 0;
  bool traditional = false;  // interleaved pairs (GPT-J) instead of halves (NeoX)
  float scale = 1.0f;        // multiplies the rotated features (yarn's attention factor)
};
void rope(const RopeArgs& a);

enum class GatedAct { silu, gelu_tanh, gelu };
struct GatedActArgs {
  FloatType type = FloatType::f32;
  const void* gate = nullptr;  // [n], contiguous
  const void* up = nullptr;
  void* out = nullptr;
  int64_t n = 0;
  GatedAct act = GatedAct::silu;
};
void gated_act(const GatedActArgs& a);

}  // namespace tinyfast::cpu
