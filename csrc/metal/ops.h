#pragma once
// eval_gpu bodies of the tinyfast primitives (csrc/ops/*.cpp call them when
// built with Metal). Each encodes its kernels on MLX's command encoder of the
// primitive's stream, after the same layout checks as eval_cpu.
#include <vector>

#include <mlx/array.h>
#include <mlx/stream.h>

#include "cpu/qmatmul.h"

namespace tinyfast::metal {

namespace mx = mlx::core;

// inputs: k, v, k_cache, v_cache, slot_mapping; outputs share the pools.
void write_kv(const mx::Stream& s, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs);

struct AttentionOptions {
  bool decode;
  float scale;
  bool causal;
  int sliding_window;  // 0: none
  float softcap;       // 0: none
};
// inputs: q, k_cache, v_cache, block_tables, [query_start_loc,] context_lens.
void paged_attention(const mx::Stream& s, const AttentionOptions& o, const std::vector<mx::array>& inputs,
                     mx::array& out);

// inputs: x, blocks (GGUF formats only; MLX affine formats never get here).
void qmatmul(const mx::Stream& s, cpu::QType type, int64_t n, int64_t k, const std::vector<mx::array>& inputs,
             mx::array& out);

}  // namespace tinyfast::metal
