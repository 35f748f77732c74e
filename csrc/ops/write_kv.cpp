#include "ops/write_kv.h"

#include <string>

#include <mlx/allocator.h>
#include <mlx/backend/cpu/encoder.h>
#include <mlx/ops.h>

#include "cpu/write_kv.h"
#include "ops/op_utils.h"
#include "ops/paged_metadata.h"

#ifdef TINYFAST_METAL
#include "metal/ops.h"
#endif

namespace tinyfast::ops {

std::pair<mx::array, mx::array> write_kv(const mx::array& k, const mx::array& v, const mx::array& k_cache,
                                         const mx::array& v_cache, const mx::array& slot_mapping,
                                         mx::StreamOrDevice s) {
  const char* op = "write_kv";
  check_ndim(op, "k", k, 3, "[num_tokens, num_kv_heads, head_dim]");
  check_ndim(op, "v", v, 3, "[num_tokens, num_kv_heads, head_dim]");
  check_ndim(op, "k_cache", k_cache, 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  check_ndim(op, "v_cache", v_cache, 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  check_ndim(op, "slot_mapping", slot_mapping, 1, "[num_tokens]");
  check_same_shape(op, "k", k, "v", v);
  check_same_shape(op, "k_cache", k_cache, "v_cache", v_cache);
  if (k.shape(1) != k_cache.shape(2) || k.shape(2) != k_cache.shape(3))
    throw std::invalid_argument(std::string(op) + ": k " + shape_str(k) + " does not match the cache rows " +
                                shape_str(k_cache) + " (num_kv_heads, head_dim)");
  if (slot_mapping.shape(0) != k.shape(0))
    throw std::invalid_argument(std::string(op) + ": slot_mapping has " + std::to_string(slot_mapping.shape(0)) +
                                " entries for " + std::to_string(k.shape(0)) + " tokens");
  check_float_dtype(op, "k_cache", k_cache);
  check_dtype(op, "v_cache", v_cache, k_cache.dtype());
  check_dtype(op, "k", k, k_cache.dtype());
  check_dtype(op, "v", v, k_cache.dtype());
  check_dtype(op, "slot_mapping", slot_mapping, mx::int32);

  const int64_t num_slots = static_cast<int64_t>(k_cache.shape(0)) * k_cache.shape(1);
  if (host_readable(slot_mapping))
    check_slot_mapping(op, slot_mapping.data<int32_t>(), slot_mapping.size(), num_slots);

  auto stream = mx::to_stream(s);
  auto outs = mx::array::make_arrays({k_cache.shape(), v_cache.shape()}, {k_cache.dtype(), v_cache.dtype()},
                                     std::make_shared<WriteKV>(stream),
                                     {graph_input(k, stream), graph_input(v, stream), k_cache, v_cache,
                                      graph_input(slot_mapping, stream)});
  return {outs[0], outs[1]};
}

void share_pool_buffers(const mx::array& k_cache, const mx::array& v_cache, std::vector<mx::array>& outputs) {
  for (const auto* c : {&k_cache, &v_cache})
    if (!c->flags().row_contiguous)
      throw std::invalid_argument(
          "write_kv: the KV pools must be row-contiguous arrays (they are updated in place); got a strided view");
  outputs[0].copy_shared_buffer(k_cache);
  outputs[1].copy_shared_buffer(v_cache);
}

void WriteKV::eval_cpu(const std::vector<mx::array>& raw, std::vector<mx::array>& outputs) {
  const std::vector<mx::array> inputs = dense_inputs(raw, {0, 1, 4}, stream());
  const auto& k = inputs[0];
  const auto& v = inputs[1];
  const auto& k_cache = inputs[2];
  const auto& v_cache = inputs[3];
  const auto& slots = inputs[4];
  share_pool_buffers(k_cache, v_cache, outputs);

  auto& enc = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) enc.set_input_array(in);
  enc.set_output_array(outputs[0]);
  enc.set_output_array(outputs[1]);

  cpu::WriteKVArgs args;
  args.elem_bytes = static_cast<int>(k.itemsize());
  args.k = k.data<void>();
  args.v = v.data<void>();
  args.k_cache = outputs[0].data<void>();
  args.v_cache = outputs[1].data<void>();
  args.slot_mapping = slots.data<int32_t>();
  args.num_tokens = k.shape(0);
  args.row_elems = static_cast<int64_t>(k.shape(1)) * k.shape(2);
  args.num_slots = static_cast<int64_t>(k_cache.shape(0)) * k_cache.shape(1);
  enc.dispatch([args] {
    check_slot_mapping("write_kv", args.slot_mapping, args.num_tokens, args.num_slots);
    cpu::write_kv(args);
  });
}

void WriteKV::eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
#ifdef TINYFAST_METAL
  // slot_mapping is device data here; the op function checked it when it was
  // already evaluated, and the kernel skips slots outside the pools.
  tinyfast::metal::write_kv(stream(), inputs, outputs);
#else
  (void)inputs;
  (void)outputs;
  throw std::runtime_error(
      "tinyfast write_kv: this build has no Metal kernels (they need macOS); run it on the CPU stream (mx.cpu)");
#endif
}

}  // namespace tinyfast::ops
