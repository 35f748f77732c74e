#include "ops/layer_ops.h"

#include <stdexcept>
#include <string>

#include <mlx/allocator.h>
#include <mlx/backend/cpu/encoder.h>
#include <mlx/ops.h>

#include "cpu/layer_ops.h"
#include "ops/op_utils.h"

namespace tinyfast::ops {
namespace {

cpu::FloatType float_type(mx::Dtype t) {
  if (t == mx::float16) return cpu::FloatType::f16;
  if (t == mx::bfloat16) return cpu::FloatType::bf16;
  return cpu::FloatType::f32;
}

[[noreturn]] void fail(const char* op, const std::string& msg) { throw std::invalid_argument(std::string(op) + ": " + msg); }

void prepare(mx::Stream stream, const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& enc = mx::cpu::get_command_encoder(stream);
  for (const auto& in : inputs) enc.set_input_array(in);
  enc.set_output_array(out);
}

[[noreturn]] void no_gpu(const char* op) {
  throw std::runtime_error(std::string("tinyfast ") + op + " is not implemented on GPU; use mx.fast there");
}

}  // namespace

// ---------------------------------------------------------------- rms_norm

mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps, mx::StreamOrDevice s) {
  const char* op = "rms_norm";
  check_float_dtype(op, "x", x);
  check_dtype(op, "weight", weight, mx::float32);
  if (x.ndim() < 1) fail(op, "x must have at least one dimension");
  if (weight.ndim() != 1 || weight.shape(0) != x.shape(-1))
    fail(op, "weight " + shape_str(weight) + " must be [dim] for x " + shape_str(x));
  if (!(eps >= 0.0f)) fail(op, "eps must be >= 0");
  auto stream = mx::to_stream(s);
  return mx::array(x.shape(), x.dtype(), std::make_shared<RMSNorm>(stream, eps),
                   {graph_input(x, stream), graph_input(weight, stream)});
}

void RMSNorm::eval_cpu(const std::vector<mx::array>& raw, std::vector<mx::array>& outputs) {
  const std::vector<mx::array> inputs = dense_inputs(raw, {0, 1}, stream());
  const auto& x = inputs[0];
  prepare(stream(), inputs, outputs[0]);
  cpu::RMSNormArgs a;
  a.type = float_type(x.dtype());
  a.x = x.data<void>();
  a.weight = inputs[1].data<float>();
  a.out = outputs[0].data<void>();
  a.dim = x.ndim() ? x.shape(-1) : 1;
  a.rows = a.dim ? static_cast<int64_t>(x.size()) / a.dim : 0;
  a.eps = eps_;
  mx::cpu::get_command_encoder(stream()).dispatch([a] { cpu::rms_norm(a); });
}

void RMSNorm::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) { no_gpu("rms_norm"); }

bool RMSNorm::is_equivalent(const mx::Primitive& other) const {
  return eps_ == static_cast<const RMSNorm&>(other).eps_;
}

// ---------------------------------------------------------------- rope

mx::array rope(const mx::array& x, const mx::array& positions, const mx::array& inv_freq, int rotary_dims,
               bool traditional, float scale, mx::StreamOrDevice s) {
  const char* op = "rope";
  check_ndim(op, "x", x, 3, "[tokens, heads, head_dim]");
  check_ndim(op, "positions", positions, 1, "[tokens]");
  check_ndim(op, "inv_freq", inv_freq, 1, "[rotary_dims / 2]");
  check_float_dtype(op, "x", x);
  check_dtype(op, "positions", positions, mx::int32);
  check_dtype(op, "inv_freq", inv_freq, mx::float32);
  if (positions.shape(0) != x.shape(0))
    fail(op, "positions has " + std::to_string(positions.shape(0)) + " entries for " + std::to_string(x.shape(0)) +
                 " tokens");
  if (rotary_dims <= 0 || rotary_dims % 2 || rotary_dims > x.shape(2))
    fail(op, "rotary_dims must be even and in [2, head_dim], got " + std::to_string(rotary_dims));
  if (inv_freq.shape(0) != rotary_dims / 2)
    fail(op, "inv_freq has " + std::to_string(inv_freq.shape(0)) + " entries, expected rotary_dims / 2 = " +
                 std::to_string(rotary_dims / 2));
  auto stream = mx::to_stream(s);
  return mx::array(x.shape(), x.dtype(), std::make_shared<Rope>(stream, rotary_dims, traditional, scale),
                   {graph_input(x, stream), graph_input(positions, stream), graph_input(inv_freq, stream)});
}

void Rope::eval_cpu(const std::vector<mx::array>& raw, std::vector<mx::array>& outputs) {
  const std::vector<mx::array> inputs = dense_inputs(raw, {0, 1, 2}, stream());
  const auto& x = inputs[0];
  prepare(stream(), inputs, outputs[0]);
  cpu::RopeArgs a;
  a.type = float_type(x.dtype());
  a.x = x.data<void>();
  a.positions = inputs[1].data<int32_t>();
  a.inv_freq = inputs[2].data<float>();
  a.out = outputs[0].data<void>();
  a.tokens = x.shape(0);
  a.heads = x.shape(1);
  a.head_dim = x.shape(2);
  a.rotary_dims = rotary_dims_;
  a.traditional = traditional_;
  a.scale = scale_;
  mx::cpu::get_command_encoder(stream()).dispatch([a] { cpu::rope(a); });
}

void Rope::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) { no_gpu("rope"); }

bool Rope::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const Rope&>(other);
  return rotary_dims_ == o.rotary_dims_ && traditional_ == o.traditional_ && scale_ == o.scale_;
}

// ---------------------------------------------------------------- gated_act

mx::array gated_act(const mx::array& gate, const mx::array& up, const std::string& act, mx::StreamOrDevice s) {
  const char* op = "gated_act";
  check_float_dtype(op, "gate", gate);
  check_dtype(op, "up", up, gate.dtype());
  check_same_shape(op, "gate", gate, "up", up);
  int kind;
  if (act == "silu") kind = static_cast<int>(cpu::GatedAct::silu);
  else if (act == "gelu_tanh") kind = static_cast<int>(cpu::GatedAct::gelu_tanh);
  else if (act == "gelu") kind = static_cast<int>(cpu::GatedAct::gelu);
  else fail(op, "act must be 'silu', 'gelu_tanh' or 'gelu', got '" + act + "'");
  auto stream = mx::to_stream(s);
  return mx::array(gate.shape(), gate.dtype(), std::make_shared<GatedActivation>(stream, kind),
                   {graph_input(gate, stream), graph_input(up, stream)});
}

void GatedActivation::eval_cpu(const std::vector<mx::array>& raw, std::vector<mx::array>& outputs) {
  const std::vector<mx::array> inputs = dense_inputs(raw, {0, 1}, stream());
  prepare(stream(), inputs, outputs[0]);
  cpu::GatedActArgs a;
  a.type = float_type(inputs[0].dtype());
  a.gate = inputs[0].data<void>();
  a.up = inputs[1].data<void>();
  a.out = outputs[0].data<void>();
  a.n = static_cast<int64_t>(inputs[0].size());
  a.act = static_cast<cpu::GatedAct>(act_);
  mx::cpu::get_command_encoder(stream()).dispatch([a] { cpu::gated_act(a); });
}

void GatedActivation::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) { no_gpu("gated_act"); }

bool GatedActivation::is_equivalent(const mx::Primitive& other) const {
  return act_ == static_cast<const GatedActivation&>(other).act_;
}

}  // namespace tinyfast::ops
