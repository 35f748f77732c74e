// Quantized matmul / dequantize (tinyfast.ops.quant wraps these with the
// QuantizedWeight class) and the test/benchmark hooks that go with them.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <mlx/array.h>
#include <mlx/transforms.h>

#include "bindings/numpy_out.h"
#include "cpu/qmatmul.h"
#include "ops/qmatmul.h"

namespace nb = nanobind;
using namespace nb::literals;
namespace mx = mlx::core;

namespace tinyfast::bindings {
namespace {

ops::QuantSpec make_spec(const std::string& format, int64_t n, int64_t k, int group_size) {
  ops::QuantSpec spec;
  spec.type = ops::parse_qtype(format);
  spec.n = n;
  spec.k = k;
  spec.group_size = group_size;
  return spec;
}

}  // namespace

void bind_quant(nb::module_& m) {
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ops::DTypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.def(
      "qmatmul",
      [](const mx::array& x, const std::vector<mx::array>& weights, const std::string& format, int64_t n, int64_t k,
         int group_size, const std::string& kernel) {
        return ops::qmatmul(x, weights, make_spec(format, n, k, group_size), ops::parse_kernel(kernel));
      },
      "x"_a, "weights"_a, "format"_a, "n"_a, "k"_a, "group_size"_a = 0, "kernel"_a = "auto",
      "x [..., K] @ W[N, K].T with W in its storage arrays: [blocks uint8 [N, row_bytes]] for\n"
      "GGUF formats, [codes uint32, scales, biases] for affine4/affine8. Lazy MLX op; output\n"
      "has x's dtype. Use tinyfast.ops.qmatmul with a QuantizedWeight instead of this.");
  m.def(
      "dequantize",
      [](const std::vector<mx::array>& weights, const std::string& format, int64_t n, int64_t k, int group_size) {
        return ops::dequantize(weights, make_spec(format, n, k, group_size));
      },
      "weights"_a, "format"_a, "n"_a, "k"_a, "group_size"_a = 0, "W as float32 [N, K] (lazy MLX op).");
  m.def(
      "qmatmul_kernels",
      [] {
        std::vector<std::string> names;
        for (cpu::KernelLevel l : cpu::available_levels()) names.emplace_back(cpu::level_name(l));
        return names;
      },
      "Kernel levels qmatmul can use here, best first (the first is what 'auto' picks).");
  m.def(
      "_quantize_activations",
      [](nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> x, const std::string& format,
         int group_size, const std::string& kernel) {
        const int64_t rows = static_cast<int64_t>(x.shape(0)), k = static_cast<int64_t>(x.shape(1));
        const ops::QuantSpec spec = make_spec(format, 1, k, group_size);
        ops::check_spec(spec);
        const cpu::KernelLevel level = ops::parse_kernel(kernel);
        cpu::QWeightView v;
        v.type = spec.type;
        v.n = 1;
        v.k = k;
        v.group_size = group_size;
        const size_t stride = cpu::act_row_bytes(v);
        std::vector<uint8_t> out(static_cast<size_t>(rows) * stride);
        {
          nb::gil_scoped_release release;
          cpu::quantize_activations(v, x.data(), cpu::FType::F32, rows, out.data(), level);
        }
        return to_numpy(std::move(out), {static_cast<size_t>(rows), stride});
      },
      "x"_a, "format"_a, "group_size"_a = 0, "kernel"_a = "auto",
      "Test hook: float32 rows [M, K] quantized exactly as qmatmul's kernels see them, as\n"
      "bytes [M, row_stride] in the activation layout of `format` (csrc/cpu/qmatmul_internal.h).");
  m.def(
      "_stream_read",
      [](const mx::array& a) {
        mx::array b = a;
        mx::eval({b});
        if (!b.flags().row_contiguous) throw std::invalid_argument("_stream_read needs a row-contiguous array");
        const auto* p = b.data<uint8_t>();
        const size_t bytes = b.nbytes();
        nb::gil_scoped_release release;
        return cpu::stream_read(p, bytes);
      },
      "a"_a, "Reads every byte of `a` with the kernels' thread pool; returns a checksum (bandwidth peer).");
}

}  // namespace tinyfast::bindings
