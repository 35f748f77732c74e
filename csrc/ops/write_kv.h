#pragma once
// write_kv: scatter this step's keys/values into the paged KV pools, in place.
//
// The outputs share the pools' buffers (no copy of the pool, ever): after
// evaluation the arrays passed as k_cache / v_cache, and every array sharing
// their buffer, see the new rows. Feed the outputs (not the old arrays) to the
// attention ops of the same step so MLX orders the write before the reads.
#include <utility>

#include <mlx/array.h>
#include <mlx/primitives.h>
#include <mlx/utils.h>

namespace tinyfast::ops {

namespace mx = mlx::core;

// k, v [num_tokens, num_kv_heads, head_dim]; pools [num_blocks, block_size,
// num_kv_heads, head_dim] (row-contiguous, same dtype: float32, float16 or
// bfloat16); slot_mapping int32 [num_tokens], slot = block * block_size +
// offset, -1 = skip. Returns (k_cache_out, v_cache_out).
std::pair<mx::array, mx::array> write_kv(const mx::array& k, const mx::array& v, const mx::array& k_cache,
                                         const mx::array& v_cache, const mx::array& slot_mapping,
                                         mx::StreamOrDevice s = {});

// Makes outputs[0] / outputs[1] share the pools' buffers (the in-place update
// every backend's eval performs); the pools must be row-contiguous.
void share_pool_buffers(const mx::array& k_cache, const mx::array& v_cache, std::vector<mx::array>& outputs);

class WriteKV : public mx::Primitive {
 public:
  explicit WriteKV(mx::Stream stream) : mx::Primitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;

  const char* name() const override { return "WriteKV"; }
  bool is_equivalent(const mx::Primitive& other) const override { return true; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[2].shape(), inputs[3].shape()};
  }
};

}  // namespace tinyfast::ops
