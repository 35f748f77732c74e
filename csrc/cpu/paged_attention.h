#pragma once
// CPU paged attention: decode and varlen prefill share one kernel. Plain pointers and sizes only: no MLX here, so the kernels can be
// driven from tests or other hosts. Callers validate the metadata first
// (csrc/ops/paged_metadata.h); the kernels still never address memory outside
// the pools, whatever the metadata says.
#include <cstdint>

namespace tinyfast::cpu {

enum class ElemType { f32, f16, bf16 };

inline int elem_size(ElemType t) { return t == ElemType::f32 ? 4 : 2; }

struct PagedAttentionArgs {
  ElemType dtype = ElemType::f32;  // of q, both pools and out
  const void* q = nullptr;         // [num_tokens, num_heads, head_dim], row-contiguous
  void* out = nullptr;             // same shape and dtype as q
  // Pools [num_blocks, block_size, num_kv_heads, head_dim]: any strides (in
  // elements) for the first three dims, head_dim contiguous.
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  int64_t k_strides[3] = {0, 0, 0};
  int64_t v_strides[3] = {0, 0, 0};
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks], -1 padded
  const int32_t* query_start_loc = nullptr;  // [num_seqs + 1]; nullptr: decode (one query per sequence)
  const int32_t* context_lens = nullptr;     // [num_seqs]
  int num_seqs = 0, num_tokens = 0;
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int num_blocks = 0, block_size = 0, max_blocks = 0;
  float scale = 1.0f;
  float softcap = 0.0f;     // <= 0: none
  int sliding_window = 0;   // <= 0: none
  bool causal = true;
};

// Tuning constants that decide how a sequence's work is cut. They are part of
// the numerics (batch invariance rests on them depending on the sequence only),
// so they are fixed here rather than derived from the batch or thread count.
struct AttentionTiling {
  // Split-K: sequences with at most this many queries in the step have their
  // keys cut into partitions of kPartition tokens (aligned to absolute
  // positions), processed in parallel and merged; longer prefills are
  // parallel enough over query tiles.
  static constexpr int kSplitMaxQueries = 16;
  static constexpr int kPartition = 512;
};

// Runs on ThreadPool::global(); the instruction-set variant comes from
// kernel_level() (see paged_attention_impl.h).
void paged_attention(const PagedAttentionArgs& args);

}  // namespace tinyfast::cpu
