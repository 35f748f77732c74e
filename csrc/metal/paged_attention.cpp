// Paged attention on the GPU: decode (plain or split-K + reduce) and prefill.
// Grids follow metal/kernels/params.h; the host never reads the metadata
// arrays (they are device data of this step), so grids are sized by the
// shapes: prefill launches an upper bound on the query tiles, split-K
// partitions the block-table capacity.
#include <algorithm>
#include <stdexcept>
#include <string>

#include <mlx/allocator.h>
#include <mlx/backend/metal/device.h>

#include "metal/device.h"
#include "metal/kernels/params.h"
#include "metal/ops.h"

namespace tinyfast::metal {
namespace {

// Split-K pays off once a sequence can hold many keys: partitions of 512 keys
// when the block tables can address more than 1024 tokens.
constexpr int kPartitionSize = 512;
constexpr int64_t kSplitAbove = 1024;

tf::PagedAttentionParams make_params(const char* op, const AttentionOptions& o, const std::vector<mx::array>& in) {
  const auto& q = in[0];
  const auto& k_cache = in[1];
  const auto& v_cache = in[2];
  const auto& block_tables = in[3];
  tf::PagedAttentionParams p{};
  p.num_seqs = checked_int(op, "num_seqs", block_tables.shape(0));
  p.num_tokens = checked_int(op, "num_tokens", q.shape(0));
  p.num_heads = q.shape(1);
  p.num_kv_heads = k_cache.shape(2);
  p.block_size = k_cache.shape(1);
  p.max_blocks = block_tables.shape(1);
  p.num_blocks = k_cache.shape(0);
  p.k_stride_block = checked_int(op, "k_cache stride", k_cache.strides(0));
  p.k_stride_token = checked_int(op, "k_cache stride", k_cache.strides(1));
  p.k_stride_head = checked_int(op, "k_cache stride", k_cache.strides(2));
  p.v_stride_block = checked_int(op, "v_cache stride", v_cache.strides(0));
  p.v_stride_token = checked_int(op, "v_cache stride", v_cache.strides(1));
  p.v_stride_head = checked_int(op, "v_cache stride", v_cache.strides(2));
  p.scale = o.scale;
  p.softcap = o.softcap;
  p.sliding_window = o.sliding_window;
  p.causal = o.causal ? 1 : 0;
  p.heads_per_group = std::min(p.num_heads / p.num_kv_heads, tf::kDecodeMaxHeads);
  return p;
}

mx::array scratch(const mx::Shape& shape) {
  mx::array a(shape, mx::float32, nullptr, {});
  a.set_data(mx::allocator::malloc(a.nbytes()));
  return a;
}

}  // namespace

void paged_attention(const mx::Stream& s, const AttentionOptions& o, const std::vector<mx::array>& inputs,
                     mx::array& out) {
  const char* op = o.decode ? "paged_attention_decode" : "paged_attention_prefill";
  const auto& q = inputs[0];
  const auto& k_cache = inputs[1];
  const auto& v_cache = inputs[2];
  for (const auto* c : {&k_cache, &v_cache})
    if (c->shape(3) > 1 && c->strides(3) != 1)
      throw std::invalid_argument(std::string(op) + ": the KV pools need a contiguous last (head_dim) axis");
  const int head_dim = q.shape(2);
  if (head_dim != 64 && head_dim != 128 && head_dim != 256)
    throw std::invalid_argument(std::string(op) + ": the Metal kernels support head_dim 64, 128 and 256, got " +
                                std::to_string(head_dim) + "; run on the CPU stream");
  out.set_data(mx::allocator::malloc(out.nbytes()));
  tf::PagedAttentionParams p = make_params(op, o, inputs);
  if (p.num_seqs == 0 || p.num_tokens == 0) return;

  auto& d = mx::metal::device(s.device);
  auto& enc = mx::metal::get_command_encoder(s);
  const std::string suffix = dtype_suffix(q.dtype()) + "_d" + std::to_string(head_dim);
  for (int i = 0; i < 4; ++i) enc.set_input_array(inputs[i], i);

  if (!o.decode) {
    // buffers: 0 q, 1 k_cache, 2 v_cache, 3 block_tables, 4 query_start_loc, 5 context_lens, 6 out, 7 params
    enc.set_compute_pipeline_state(get_kernel(d, "tf_paged_attention_prefill_" + suffix));
    enc.set_input_array(inputs[4], 4);
    enc.set_input_array(inputs[5], 5);
    enc.set_output_array(out, 6);
    enc.set_bytes(p, 7);
    enc.set_threadgroup_memory_length(sizeof(float) * tf::prefill_threadgroup_floats(head_dim), 0);
    enc.dispatch_threadgroups(MTL::Size(p.num_heads, tf::prefill_max_tiles(p.num_tokens, p.num_seqs), 1),
                              MTL::Size(tf::kSimd * tf::kPrefillSimdgroups, 1, 1));
    return;
  }

  const int group = p.num_heads / p.num_kv_heads;
  const int chunks = (group + p.heads_per_group - 1) / p.heads_per_group;
  const int64_t capacity = static_cast<int64_t>(p.max_blocks) * p.block_size;
  const size_t smem = sizeof(float) * tf::decode_threadgroup_floats(head_dim);
  enc.set_input_array(inputs[4], 4);  // context_lens
  enc.set_threadgroup_memory_length(smem, 0);
  if (capacity <= kSplitAbove) {
    // buffers: 0..4 as above, 5 out, 6 params
    enc.set_compute_pipeline_state(get_kernel(d, "tf_paged_attention_decode_" + suffix));
    enc.set_output_array(out, 5);
    enc.set_bytes(p, 6);
    enc.dispatch_threadgroups(MTL::Size(p.num_kv_heads * chunks, p.num_seqs, 1), MTL::Size(tf::kSimd, 1, 1));
    return;
  }
  p.partition_size = kPartitionSize;
  p.num_partitions = static_cast<int>((capacity + kPartitionSize - 1) / kPartitionSize);
  auto acc = scratch({p.num_partitions, p.num_seqs, p.num_heads, head_dim});
  auto part_max = scratch({p.num_partitions, p.num_seqs, p.num_heads});
  auto part_sum = scratch({p.num_partitions, p.num_seqs, p.num_heads});
  // buffers: 0..4 as above, 5 partial acc, 6 partial max, 7 partial sum, 8 params
  enc.set_compute_pipeline_state(get_kernel(d, "tf_paged_attention_decode_split_" + suffix));
  enc.set_output_array(acc, 5);
  enc.set_output_array(part_max, 6);
  enc.set_output_array(part_sum, 7);
  enc.set_bytes(p, 8);
  enc.dispatch_threadgroups(MTL::Size(p.num_kv_heads * chunks, p.num_seqs, p.num_partitions),
                            MTL::Size(tf::kSimd, 1, 1));
  // The reduce reads the partials: the encoder orders it after the split kernel.
  enc.set_compute_pipeline_state(get_kernel(d, "tf_paged_attention_decode_reduce_" + suffix));
  enc.set_input_array(acc, 0);
  enc.set_input_array(part_max, 1);
  enc.set_input_array(part_sum, 2);
  enc.set_output_array(out, 3);
  enc.set_bytes(p, 4);
  enc.dispatch_threadgroups(MTL::Size(p.num_heads, p.num_seqs, 1), MTL::Size(tf::kSimd, 1, 1));
  enc.add_temporaries({std::move(acc), std::move(part_max), std::move(part_sum)});
}

}  // namespace tinyfast::metal
