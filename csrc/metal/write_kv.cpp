// write_kv on the GPU: one thread per element of a K/V row and token.
#include <stdexcept>
#include <string>

#include <mlx/backend/metal/device.h>

#include "metal/device.h"
#include "metal/kernels/params.h"
#include "metal/ops.h"
#include "ops/write_kv.h"

namespace tinyfast::metal {

void write_kv(const mx::Stream& s, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const char* op = "write_kv";
  const auto& k = inputs[0];
  const auto& v = inputs[1];
  const auto& k_cache = inputs[2];
  const auto& v_cache = inputs[3];
  const auto& slots = inputs[4];
  tinyfast::ops::share_pool_buffers(k_cache, v_cache, outputs);

  tf::WriteKVParams p;
  p.num_tokens = checked_int(op, "num_tokens", k.shape(0));
  p.row_elems = checked_int(op, "num_kv_heads * head_dim", static_cast<int64_t>(k.shape(1)) * k.shape(2));
  p.num_slots = checked_int(op, "num_blocks * block_size", static_cast<int64_t>(k_cache.shape(0)) * k_cache.shape(1));
  if (p.num_tokens == 0 || p.row_elems == 0) return;

  auto& d = mx::metal::device(s.device);
  auto& enc = mx::metal::get_command_encoder(s);
  enc.set_compute_pipeline_state(get_kernel(d, "tf_write_kv_" + dtype_suffix(k.dtype())));
  enc.set_input_array(k, 0);
  enc.set_input_array(v, 1);
  enc.set_output_array(outputs[0], 2);
  enc.set_output_array(outputs[1], 3);
  enc.set_input_array(slots, 4);
  enc.set_bytes(p, 5);
  const int groups = (p.row_elems + tf::kWriteKVThreads - 1) / tf::kWriteKVThreads;
  enc.dispatch_threadgroups(MTL::Size(groups, p.num_tokens, 1), MTL::Size(tf::kWriteKVThreads, 1, 1));
}

}  // namespace tinyfast::metal
