#pragma once
// Internals shared by the paged-attention driver (paged_attention.cpp, baseline
// flags) and the per-instruction-set kernel builds of
// paged_attention_kernel.h. Plain structs only: the kernel builds must not
// instantiate standard-library templates, or the linker could hand AVX2-compiled
// copies of them to the baseline code.
#include <cstdint>

#include "cpu/paged_attention.h"

namespace tinyfast::cpu::attn {

// Sizes derived from the model shape only (never from the batch).
struct KernelConfig {
  int group = 1;        // query heads per kv head
  int head_dim_pad = 8; // head_dim rounded up to 8 (one f32x8)
  int block_k = 64;     // keys per inner tile; a power of two dividing kPartition
  int block_q = 1;      // queries per work item; block_q * group rows
};

// One query tile of one sequence: queries q_begin..q_end of the flattened batch.
struct TilePlan {
  int32_t seq = 0;
  int32_t q_begin = 0, q_end = 0;
  int32_t first_pos = 0;         // position of query q_begin in its sequence
  int32_t context_len = 0;
  int32_t key_lo = 0, key_hi = 0;  // keys any query of the tile may see
  int32_t part_begin = 0;        // first partition (key_lo / kPartition)
  int32_t num_parts = 1;         // > 1: split-K, partial results merged by combine()
  int32_t kv_group = 1;          // kv heads per work item (divides num_kv_heads)
  int64_t partial_offset = -1;   // first partial row when num_parts > 1
};

// Per-worker scratch, sized by the driver for KernelConfig (rows = block_q * group;
// an item of kv_group kv heads has at most that many rows in total).
struct Workspace {
  float* q;        // [rows, head_dim_pad], scaled
  float* k;        // [block_k, head_dim_pad] converted keys (when convert_kv)
  float* v;        // [block_k, head_dim_pad]
  float* logits;   // [rows, block_k]
  float* m;        // [rows] running max
  float* l;        // [rows] running sum
  float* acc;      // [rows, head_dim_pad] unnormalised output
  const void** kp;  // [block_k + 8] key rows (f32 scratch, or in the pool)
  const void** vp;  // [block_k + 8]
  const char** kraw;  // [2 * num_kv_heads * (block_k + 8)] pool rows of the current and next tile
  const char** vraw;  // [2 * num_kv_heads * (block_k + 8)]
  int32_t* vis_lo;   // [rows] first visible key position
  int32_t* vis_hi;   // [rows] one past the last visible key position
  int32_t* active;   // [rows] rows that see a key of the current tile
};

// Split-K partial results: row index = partial_offset + (part * num_kv_heads + kv_head) * rows + row.
struct Partials {
  float* acc;  // [partial_rows, head_dim_pad]
  float* m;    // [partial_rows]
  float* l;    // [partial_rows]
};

struct Kernels {
  void (*run_item)(const PagedAttentionArgs&, const KernelConfig&, const TilePlan&, int first_kv_head, int part,
                   const Workspace&, const Partials&);
  void (*combine)(const PagedAttentionArgs&, const KernelConfig&, const TilePlan&, int kv_head, const Workspace&,
                  const Partials&);
};

namespace baseline {
const Kernels& kernels();
}
#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 {
const Kernels& kernels();  // needs AVX2 + FMA + F16C
}
#endif

}  // namespace tinyfast::cpu::attn
