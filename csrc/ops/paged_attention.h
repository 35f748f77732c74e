#pragma once
// Paged attention over the KV pools written by write_kv: decode (one query per
// sequence) and varlen prefill (chunked prefill, prefix-cache hits). One
// primitive serves both; decode is prefill with query_start_loc = arange.
//
// Conventions (tests/reference/attention.py): GQA query head h reads kv head
// h / (num_heads / num_kv_heads); a query at position t sees keys p with
// p <= t (causal) and t - p < sliding_window; softcap c maps a logit x (after
// scale) to c * tanh(x / c) before the softmax; block_tables rows are padded
// with -1 past a sequence's blocks and those entries are never read.
#include <optional>

#include <mlx/array.h>
#include <mlx/primitives.h>
#include <mlx/utils.h>

namespace tinyfast::ops {

namespace mx = mlx::core;

// q [num_seqs, num_heads, head_dim]; the query of sequence s is at position
// context_lens[s] - 1 (its own K/V already written). Returns q's shape/dtype.
mx::array paged_attention_decode(const mx::array& q, const mx::array& k_cache, const mx::array& v_cache,
                                 const mx::array& block_tables, const mx::array& context_lens, float scale,
                                 std::optional<int> sliding_window = std::nullopt,
                                 std::optional<float> softcap = std::nullopt, mx::StreamOrDevice s = {});

// q [num_tokens, num_heads, head_dim]: sequence s owns queries
// query_start_loc[s] .. query_start_loc[s+1], the last ones of its
// context_lens[s] tokens.
mx::array paged_attention_prefill(const mx::array& q, const mx::array& k_cache, const mx::array& v_cache,
                                  const mx::array& block_tables, const mx::array& query_start_loc,
                                  const mx::array& context_lens, float scale, bool causal = true,
                                  std::optional<int> sliding_window = std::nullopt,
                                  std::optional<float> softcap = std::nullopt, mx::StreamOrDevice s = {});

class PagedAttention : public mx::UnaryPrimitive {
 public:
  // Inputs: q, k_cache, v_cache, block_tables, [query_start_loc,] context_lens.
  PagedAttention(mx::Stream stream, bool decode, float scale, bool causal, int sliding_window, float softcap)
      : mx::UnaryPrimitive(stream),
        decode_(decode),
        scale_(scale),
        causal_(causal),
        sliding_window_(sliding_window),
        softcap_(softcap) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override { return decode_ ? "PagedAttentionDecode" : "PagedAttentionPrefill"; }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 private:
  bool decode_;
  float scale_;
  bool causal_;
  int sliding_window_;  // 0: none
  float softcap_;       // 0: none
};

}  // namespace tinyfast::ops
