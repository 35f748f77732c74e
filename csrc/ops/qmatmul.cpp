#include "ops/qmatmul.h"

#include "ops/dense_inputs.h"
#include "ops/dtype_name.h"

#include <mlx/allocator.h>
#include <mlx/backend/cpu/encoder.h>
#include <mlx/ops.h>

#ifdef TINYFAST_METAL
#include "metal/ops.h"
#endif

#include <algorithm>
#include <cctype>
#include <limits>
#include <sstream>

namespace tinyfast::ops {
namespace {

using cpu::FType;
using cpu::QType;

std::string shape_str(const mx::Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

bool is_affine(QType t) { return t == QType::Affine4 || t == QType::Affine8; }
int affine_bits(QType t) { return t == QType::Affine4 ? 4 : 8; }

FType ftype(mx::Dtype t) {
  if (t == mx::float16) return FType::F16;
  if (t == mx::bfloat16) return FType::BF16;
  return FType::F32;
}

bool is_float_type(mx::Dtype t) { return t == mx::float32 || t == mx::float16 || t == mx::bfloat16; }

// Skips the Contiguous node for the common case: an evaluated row-contiguous array.
mx::array row_contiguous(const mx::array& a, mx::Stream s) {
  if (a.is_available() && a.flags().row_contiguous) return a;
  return mx::contiguous(a, false, s);
}

}  // namespace

void check_spec(const QuantSpec& spec) {
  const cpu::QTypeInfo& info = cpu::qtype_info(spec.type);
  const std::string name = info.name;
  if (spec.n <= 0 || spec.k <= 0) {
    throw std::invalid_argument(name + ": weight shape must be positive, got [" + std::to_string(spec.n) + ", " +
                                std::to_string(spec.k) + "]");
  }
  if (spec.n > std::numeric_limits<int32_t>::max() || spec.k > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument(name + ": weight dimensions must fit in int32");
  }
  if (is_affine(spec.type)) {
    if (spec.group_size != 32 && spec.group_size != 64 && spec.group_size != 128) {
      throw std::invalid_argument(name + ": group_size must be 32, 64 or 128, got " + std::to_string(spec.group_size));
    }
    if (spec.k % spec.group_size) {
      throw std::invalid_argument(name + ": K=" + std::to_string(spec.k) + " is not a multiple of group_size " +
                                  std::to_string(spec.group_size));
    }
  } else if (spec.k % info.block_elems) {
    throw std::invalid_argument(name + ": K=" + std::to_string(spec.k) + " is not a multiple of the " +
                                std::to_string(info.block_elems) + "-element block");
  }
}

namespace {

void expect_shape(const mx::array& a, const mx::Shape& want, const std::string& what) {
  if (a.shape() != want) {
    throw std::invalid_argument(what + " has shape " + shape_str(a.shape()) + ", expected " + shape_str(want));
  }
}

cpu::QWeightView weight_view(const QuantSpec& spec, const std::vector<mx::array>& w) {
  cpu::QWeightView v;
  v.type = spec.type;
  v.n = spec.n;
  v.k = spec.k;
  v.data = w[0].data<uint8_t>();
  if (is_affine(spec.type)) {
    v.scales = w[1].data<void>();
    v.biases = w[2].data<void>();
    v.scale_type = ftype(w[1].dtype());
    v.group_size = spec.group_size;
  }
  return v;
}

void require_cpu_ready(const std::vector<mx::array>& inputs, const char* op) {
  for (const mx::array& a : inputs) {
    if (!a.flags().row_contiguous) {
      throw std::runtime_error(std::string(op) + ": internal error, input is not row-contiguous");
    }
  }
}

}  // namespace

QType parse_qtype(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (int t = 0; t < cpu::kNumQTypes; ++t) {
    if (lower == cpu::qtype_info(static_cast<QType>(t)).name) return static_cast<QType>(t);
  }
  throw std::invalid_argument("unknown quantization format '" + name +
                              "' (supported: q4_0, q5_0, q8_0, q4_k, q6_k, affine4, affine8)");
}

cpu::KernelLevel parse_kernel(const std::string& name) {
  const std::vector<cpu::KernelLevel> levels = cpu::available_levels();
  if (name == "auto") return levels.front();
  for (cpu::KernelLevel l : levels) {
    if (name == cpu::level_name(l)) return l;
  }
  std::string have;
  for (cpu::KernelLevel l : levels) have += std::string(have.empty() ? "" : ", ") + cpu::level_name(l);
  throw std::invalid_argument("kernel '" + name + "' is not available on this CPU/build (available: auto, " + have +
                              ")");
}

std::vector<mx::array> checked_weights(const std::vector<mx::array>& weights, const QuantSpec& spec, mx::Stream s) {
  check_spec(spec);
  const std::string name = cpu::qtype_info(spec.type).name;
  const int n = static_cast<int>(spec.n);
  if (!is_affine(spec.type)) {
    if (weights.size() != 1) {
      throw std::invalid_argument(name + ": expected one uint8 block array, got " + std::to_string(weights.size()) +
                                  " arrays");
    }
    if (weights[0].dtype() != mx::uint8) {
      throw DTypeError(name + ": block data must be uint8, got " + dtype_str(weights[0].dtype()));
    }
    cpu::QWeightView v;
    v.type = spec.type;
    v.k = spec.k;
    expect_shape(weights[0], {n, static_cast<int>(v.row_bytes())}, name + " block data");
    return {row_contiguous(weights[0], s)};
  }
  if (weights.size() != 3) {
    throw std::invalid_argument(name + ": expected (codes, scales, biases), got " + std::to_string(weights.size()) +
                                " arrays");
  }
  const mx::array &codes = weights[0], &scales = weights[1], &biases = weights[2];
  if (codes.dtype() != mx::uint32) throw DTypeError(name + ": codes must be uint32, got " + dtype_str(codes.dtype()));
  if (!is_float_type(scales.dtype())) {
    throw DTypeError(name + ": scales must be float32, float16 or bfloat16, got " + dtype_str(scales.dtype()));
  }
  if (biases.dtype() != scales.dtype()) {
    throw DTypeError(name + ": biases dtype " + dtype_str(biases.dtype()) + " differs from scales dtype " +
                     dtype_str(scales.dtype()));
  }
  const int bits = affine_bits(spec.type);
  expect_shape(codes, {n, static_cast<int>(spec.k * bits / 32)}, name + " codes");
  const int groups = static_cast<int>(spec.k / spec.group_size);
  expect_shape(scales, {n, groups}, name + " scales");
  expect_shape(biases, {n, groups}, name + " biases");
  return {row_contiguous(codes, s), row_contiguous(scales, s), row_contiguous(biases, s)};
}

mx::array qmatmul(const mx::array& x, const std::vector<mx::array>& weights, const QuantSpec& spec,
                  cpu::KernelLevel level, mx::StreamOrDevice s) {
  const mx::Stream stream = mx::to_stream(s);
  std::vector<mx::array> inputs = checked_weights(weights, spec, stream);
  if (!is_float_type(x.dtype())) {
    throw DTypeError("qmatmul: x must be float32, float16 or bfloat16, got " + dtype_str(x.dtype()));
  }
  if (x.ndim() == 0) throw std::invalid_argument("qmatmul: x must have at least one dimension");
  if (x.shape().back() != spec.k) {
    throw std::invalid_argument("qmatmul: x has shape " + shape_str(x.shape()) + " but the weight has K=" +
                                std::to_string(spec.k) + " (x [..., K] @ W[N, K].T)");
  }
  mx::Shape out_shape = x.shape();
  out_shape.back() = static_cast<int>(spec.n);
  cpu::QWeightView view;
  view.type = spec.type;
  view.k = spec.k;
  view.group_size = spec.group_size;
  const int64_t m_rows = static_cast<int64_t>(x.size()) / spec.k;
  if (cpu::qmatmul_workspace_bytes(view, m_rows) > static_cast<size_t>(std::numeric_limits<int32_t>::max()) ||
      m_rows * spec.n > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("qmatmul: " + std::to_string(m_rows) + " rows of x is too many at once for N=" +
                                std::to_string(spec.n) + ", K=" + std::to_string(spec.k) + "; split the batch");
  }
  if (stream.device == mx::Device::gpu && is_affine(spec.type)) {
    // MLX affine weights are MLX's own layout: its GPU kernel serves them.
    return mx::astype(mx::quantized_matmul(x, inputs[0], inputs[1], inputs[2], true, spec.group_size,
                                           affine_bits(spec.type), "affine", stream),
                      x.dtype(), stream);
  }
  inputs.insert(inputs.begin(), graph_input(x, stream));
  return mx::array(out_shape, x.dtype(), std::make_shared<QMatmul>(stream, spec, level), std::move(inputs));
}

mx::array dequantize(const std::vector<mx::array>& weights, const QuantSpec& spec, mx::StreamOrDevice s) {
  const mx::Stream stream = mx::to_stream(s);
  std::vector<mx::array> inputs = checked_weights(weights, spec, stream);
  return mx::array({static_cast<int>(spec.n), static_cast<int>(spec.k)}, mx::float32,
                   std::make_shared<QDequantize>(stream, spec), std::move(inputs));
}

// ------------------------------------------------------------------ QMatmul

void QMatmul::eval_cpu(const std::vector<mx::array>& raw, mx::array& out) {
  const std::vector<mx::array> inputs = dense_inputs(raw, {0}, stream());
  require_cpu_ready(inputs, "qmatmul");
  out.set_data(mx::allocator::malloc(out.nbytes()));
  const mx::array& x = inputs[0];
  const std::vector<mx::array> w(inputs.begin() + 1, inputs.end());
  const int64_t m_rows = static_cast<int64_t>(x.size()) / spec_.k;
  if (m_rows == 0) return;
  const cpu::QWeightView view = weight_view(spec_, w);
  // Quantized activations live in an MLX buffer held by the encoder until the
  // task has run: allocation failures surface here, not inside the task.
  mx::array workspace({static_cast<int>(cpu::qmatmul_workspace_bytes(view, m_rows))}, mx::uint8, nullptr, {});
  workspace.set_data(mx::allocator::malloc(workspace.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const mx::array& a : inputs) encoder.set_input_array(a);
  encoder.set_output_array(out);
  encoder.dispatch([view, xp = x.data<void>(), xt = ftype(x.dtype()), m_rows, yp = out.data<void>(),
                    yt = ftype(out.dtype()), level = level_, ws = workspace.data<uint8_t>()]() {
    cpu::qmatmul(view, xp, xt, m_rows, yp, yt, level, ws);
  });
  encoder.add_temporary(std::move(workspace));
}

void QMatmul::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
#ifdef TINYFAST_METAL
  tinyfast::metal::qmatmul(stream(), spec_.type, spec_.n, spec_.k, inputs, out);
#else
  (void)inputs;
  (void)out;
  throw std::runtime_error(
      "tinyfast qmatmul: this build has no Metal kernels (they need macOS); run it on the CPU "
      "(mx.set_default_device(mx.cpu) or with mx.stream(mx.cpu))");
#endif
}

bool QMatmul::is_equivalent(const mx::Primitive& other) const {
  const auto* o = dynamic_cast<const QMatmul*>(&other);
  return o != nullptr && o->spec_ == spec_ && o->level_ == level_;
}

std::vector<mx::Shape> QMatmul::output_shapes(const std::vector<mx::array>& inputs) {
  mx::Shape s = inputs[0].shape();
  s.back() = static_cast<int>(spec_.n);
  return {s};
}

// -------------------------------------------------------------- QDequantize

void QDequantize::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  require_cpu_ready(inputs, "dequantize");
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream());
  for (const mx::array& a : inputs) encoder.set_input_array(a);
  encoder.set_output_array(out);
  encoder.dispatch([view = weight_view(spec_, inputs), yp = out.data<float>()]() { cpu::dequantize(view, yp); });
}

void QDequantize::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error(
      "tinyfast dequantize: not implemented on GPU yet; run it on the CPU (mx.set_default_device(mx.cpu) "
      "or with mx.stream(mx.cpu))");
}

bool QDequantize::is_equivalent(const mx::Primitive& other) const {
  const auto* o = dynamic_cast<const QDequantize*>(&other);
  return o != nullptr && o->spec_ == spec_;
}

std::vector<mx::Shape> QDequantize::output_shapes(const std::vector<mx::array>&) {
  return {{static_cast<int>(spec_.n), static_cast<int>(spec_.k)}};
}

}  // namespace tinyfast::ops
