#include "ops/paged_attention.h"

#include <cmath>
#include <string>

#include <mlx/allocator.h>
#include <mlx/backend/cpu/encoder.h>
#include <mlx/ops.h>

#include "cpu/paged_attention.h"
#include "ops/op_utils.h"
#include "ops/paged_metadata.h"

#ifdef TINYFAST_METAL
#include "metal/ops.h"
#endif

namespace tinyfast::ops {
namespace {

struct Params {
  float scale;
  bool causal;
  int sliding_window;
  float softcap;
};

Params check_params(const char* op, float scale, bool causal, std::optional<int> window, std::optional<float> cap) {
  if (!std::isfinite(scale)) throw std::invalid_argument(std::string(op) + ": scale must be finite");
  if (window && *window < 1)
    throw std::invalid_argument(std::string(op) + ": sliding_window must be >= 1 (or None), got " +
                                std::to_string(*window));
  if (cap && !(*cap > 0.0f && std::isfinite(*cap)))
    throw std::invalid_argument(std::string(op) + ": softcap must be a positive number (or None), got " +
                                std::to_string(*cap));
  return {scale, causal, window.value_or(0), cap.value_or(0.0f)};
}

// Shape and dtype checks common to decode and prefill; returns num_seqs.
int64_t check_common(const char* op, const mx::array& q, const mx::array& k_cache, const mx::array& v_cache,
                     const mx::array& block_tables, const mx::array& context_lens) {
  check_ndim(op, "q", q, 3, "[num_tokens, num_heads, head_dim]");
  check_ndim(op, "k_cache", k_cache, 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  check_ndim(op, "v_cache", v_cache, 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  check_ndim(op, "block_tables", block_tables, 2, "[num_seqs, max_blocks_per_seq]");
  check_ndim(op, "context_lens", context_lens, 1, "[num_seqs]");
  check_same_shape(op, "k_cache", k_cache, "v_cache", v_cache);
  check_float_dtype(op, "q", q);
  check_dtype(op, "k_cache", k_cache, q.dtype());
  check_dtype(op, "v_cache", v_cache, q.dtype());
  check_dtype(op, "block_tables", block_tables, mx::int32);
  check_dtype(op, "context_lens", context_lens, mx::int32);
  const int num_heads = q.shape(1), num_kv_heads = k_cache.shape(2);
  if (q.shape(2) != k_cache.shape(3))
    throw std::invalid_argument(std::string(op) + ": q head_dim " + std::to_string(q.shape(2)) +
                                " differs from the cache head_dim " + std::to_string(k_cache.shape(3)));
  if (num_kv_heads < 1 || num_heads % num_kv_heads != 0)
    throw std::invalid_argument(std::string(op) + ": num_heads " + std::to_string(num_heads) +
                                " is not a multiple of num_kv_heads " + std::to_string(num_kv_heads));
  if (k_cache.shape(1) < 1) throw std::invalid_argument(std::string(op) + ": block_size must be >= 1");
  if (block_tables.shape(0) != context_lens.shape(0))
    throw std::invalid_argument(std::string(op) + ": block_tables has " + std::to_string(block_tables.shape(0)) +
                                " rows for " + std::to_string(context_lens.shape(0)) + " sequences (context_lens)");
  return context_lens.shape(0);
}

mx::array build(const char* op, const mx::array& q, const mx::array& k_cache, const mx::array& v_cache,
                const mx::array& block_tables, const mx::array* qsl, const mx::array& context_lens, const Params& p,
                bool decode, mx::StreamOrDevice s) {
  const int64_t num_seqs = context_lens.shape(0);
  // Eager calls with evaluated metadata are checked now, so the error comes from the call itself.
  if (host_readable(block_tables) && host_readable(context_lens) && (!qsl || host_readable(*qsl)))
    check_paged_metadata(op, block_tables.data<int32_t>(), num_seqs, block_tables.shape(1),
                         qsl ? qsl->data<int32_t>() : nullptr, context_lens.data<int32_t>(), q.shape(0),
                         k_cache.shape(0), k_cache.shape(1), decode ? 1 : 0);
  auto stream = mx::to_stream(s);
  std::vector<mx::array> inputs{graph_input(q, stream), k_cache, v_cache, graph_input(block_tables, stream)};
  if (qsl) inputs.push_back(graph_input(*qsl, stream));
  inputs.push_back(graph_input(context_lens, stream));
  return mx::array(q.shape(), q.dtype(),
                   std::make_shared<PagedAttention>(stream, decode, p.scale, p.causal, p.sliding_window, p.softcap),
                   std::move(inputs));
}

}  // namespace

mx::array paged_attention_decode(const mx::array& q, const mx::array& k_cache, const mx::array& v_cache,
                                 const mx::array& block_tables, const mx::array& context_lens, float scale,
                                 std::optional<int> sliding_window, std::optional<float> softcap,
                                 mx::StreamOrDevice s) {
  const char* op = "paged_attention_decode";
  const int64_t num_seqs = check_common(op, q, k_cache, v_cache, block_tables, context_lens);
  if (q.shape(0) != num_seqs)
    throw std::invalid_argument(std::string(op) + ": q has " + std::to_string(q.shape(0)) +
                                " rows (one query per sequence) for " + std::to_string(num_seqs) + " sequences");
  const Params p = check_params(op, scale, true, sliding_window, softcap);
  return build(op, q, k_cache, v_cache, block_tables, nullptr, context_lens, p, true, s);
}

mx::array paged_attention_prefill(const mx::array& q, const mx::array& k_cache, const mx::array& v_cache,
                                  const mx::array& block_tables, const mx::array& query_start_loc,
                                  const mx::array& context_lens, float scale, bool causal,
                                  std::optional<int> sliding_window, std::optional<float> softcap,
                                  mx::StreamOrDevice s) {
  const char* op = "paged_attention_prefill";
  const int64_t num_seqs = check_common(op, q, k_cache, v_cache, block_tables, context_lens);
  check_ndim(op, "query_start_loc", query_start_loc, 1, "[num_seqs + 1]");
  check_dtype(op, "query_start_loc", query_start_loc, mx::int32);
  if (query_start_loc.shape(0) != num_seqs + 1)
    throw std::invalid_argument(std::string(op) + ": query_start_loc has " +
                                std::to_string(query_start_loc.shape(0)) + " entries for " +
                                std::to_string(num_seqs) + " sequences (needs num_seqs + 1)");
  const Params p = check_params(op, scale, causal, sliding_window, softcap);
  return build(op, q, k_cache, v_cache, block_tables, &query_start_loc, context_lens, p, false, s);
}

bool PagedAttention::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const PagedAttention&>(other);
  return decode_ == o.decode_ && scale_ == o.scale_ && causal_ == o.causal_ &&
         sliding_window_ == o.sliding_window_ && softcap_ == o.softcap_;
}

void PagedAttention::eval_cpu(const std::vector<mx::array>& raw, mx::array& out) {
  const char* op = decode_ ? "paged_attention_decode" : "paged_attention_prefill";
  const std::vector<mx::array> inputs =
      decode_ ? dense_inputs(raw, {0, 3, 4}, stream()) : dense_inputs(raw, {0, 3, 4, 5}, stream());
  const auto& q = inputs[0];
  const auto& k_cache = inputs[1];
  const auto& v_cache = inputs[2];
  const auto& block_tables = inputs[3];
  const mx::array* qsl = decode_ ? nullptr : &inputs[4];
  const auto& context_lens = inputs[decode_ ? 4 : 5];
  for (const auto* c : {&k_cache, &v_cache})
    if (c->shape(3) > 1 && c->strides(3) != 1)
      throw std::invalid_argument(std::string(op) + ": the KV pools need a contiguous last (head_dim) axis");

  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& enc = mx::cpu::get_command_encoder(stream());
  for (const auto& in : inputs) enc.set_input_array(in);
  enc.set_output_array(out);

  cpu::PagedAttentionArgs a;
  a.dtype = elem_type(q.dtype());
  a.q = q.data<void>();
  a.out = out.data<void>();
  a.k_cache = k_cache.data<void>();
  a.v_cache = v_cache.data<void>();
  for (int i = 0; i < 3; ++i) {
    a.k_strides[i] = k_cache.strides(i);
    a.v_strides[i] = v_cache.strides(i);
  }
  a.block_tables = block_tables.data<int32_t>();
  a.query_start_loc = qsl ? qsl->data<int32_t>() : nullptr;
  a.context_lens = context_lens.data<int32_t>();
  a.num_seqs = context_lens.shape(0);
  a.num_tokens = q.shape(0);
  a.num_heads = q.shape(1);
  a.num_kv_heads = k_cache.shape(2);
  a.head_dim = q.shape(2);
  a.num_blocks = k_cache.shape(0);
  a.block_size = k_cache.shape(1);
  a.max_blocks = block_tables.shape(1);
  a.scale = scale_;
  a.softcap = softcap_;
  a.sliding_window = sliding_window_;
  a.causal = causal_;
  const int32_t min_context = decode_ ? 1 : 0;
  enc.dispatch([a, op, min_context] {
    check_paged_metadata(op, a.block_tables, a.num_seqs, a.max_blocks, a.query_start_loc, a.context_lens,
                         a.num_tokens, a.num_blocks, a.block_size, min_context);
    cpu::paged_attention(a);
  });
}

void PagedAttention::eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) {
#ifdef TINYFAST_METAL
  // The metadata arrays are device data here: the op function checked them
  // when they were already evaluated; the kernels never read outside the pools.
  const tinyfast::metal::AttentionOptions o{decode_, scale_, causal_, sliding_window_, softcap_};
  tinyfast::metal::paged_attention(stream(), o, inputs, out);
#else
  (void)inputs;
  (void)out;
  throw std::runtime_error(std::string("tinyfast ") + name() +
                           ": this build has no Metal kernels (they need macOS); run it on the CPU stream (mx.cpu)");
#endif
}

}  // namespace tinyfast::ops
