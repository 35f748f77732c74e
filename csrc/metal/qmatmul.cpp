// GGUF quantized matmul on the GPU: the mat-vec kernel, one dispatch for all
// rows of x (grid y = rows).
#include <stdexcept>
#include <string>

#include <mlx/allocator.h>
#include <mlx/backend/metal/device.h>

#include "metal/device.h"
#include "metal/kernels/params.h"
#include "metal/ops.h"

namespace tinyfast::metal {

void qmatmul(const mx::Stream& s, cpu::QType type, int64_t n, int64_t k, const std::vector<mx::array>& inputs,
             mx::array& out) {
  const char* op = "qmatmul";
  const auto& x = inputs[0];
  const auto& w = inputs[1];
  const char* fmt = cpu::qtype_info(type).name;  // "q4_0", ... as in the kernel names
  if (type == cpu::QType::Affine4 || type == cpu::QType::Affine8)
    throw std::logic_error("qmatmul: MLX affine formats run as mx.quantized_matmul on the GPU");
  out.set_data(mx::allocator::malloc(out.nbytes()));
  tf::QMatvecParams p;
  p.m = checked_int(op, "rows of x", static_cast<int64_t>(x.size()) / k);
  p.n = checked_int(op, "N", n);
  p.k = checked_int(op, "K", k);
  p.row_bytes = checked_int(op, "row bytes", w.shape(1));
  if (p.m == 0) return;
  auto& d = mx::metal::device(s.device);
  auto& enc = mx::metal::get_command_encoder(s);
  enc.set_compute_pipeline_state(get_kernel(d, std::string("tf_qmatmul_") + fmt + "_" + dtype_suffix(x.dtype())));
  enc.set_input_array(x, 0);
  enc.set_input_array(w, 1);
  enc.set_output_array(out, 2);
  enc.set_bytes(p, 3);
  const int rows = tf::kQMatvecSimdgroups * tf::kQMatvecRows;
  enc.dispatch_threadgroups(MTL::Size((p.n + rows - 1) / rows, p.m, 1),
                            MTL::Size(tf::kSimd * tf::kQMatvecSimdgroups, 1, 1));
}

}  // namespace tinyfast::metal
