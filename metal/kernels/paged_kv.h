// Shared by the paged attention kernels: where a token's K/V row lives, and
// which keys a query may see (csrc/ops/paged_attention.h conventions).
#pragma once

#include "kernels/defines.h"
#include "kernels/params.h"

namespace tf {

// Row of kv head `kvh` for position `pos` of the sequence whose block table
// row is `table`. The op validates the tables before launch; an entry outside
// the pool reads block 0 instead of memory outside it (as the CPU kernel does).
template <typename T>
inline const device T* kv_row(const device T* pool, const device int* table, int pos, int kvh,
                              constant PagedAttentionParams& p, int stride_block, int stride_token,
                              int stride_head) {
  int blk = table[pos / p.block_size];
  if (blk < 0 || blk >= p.num_blocks) blk = 0;
  return pool + static_cast<long>(blk) * stride_block + static_cast<long>(pos % p.block_size) * stride_token +
         static_cast<long>(kvh) * stride_head;
}

// Oldest key a query at `qpos` sees: t - p < window.
inline int window_start(int qpos, constant PagedAttentionParams& p) {
  return p.sliding_window > 0 ? max(0, qpos - p.sliding_window + 1) : 0;
}

// c * tanh(x / c) (Gemma-2 logit softcap), after scale, before masking.
inline float apply_softcap(float x, constant PagedAttentionParams& p) {
  return p.softcap > 0.0f ? p.softcap * metal::tanh(x / p.softcap) : x;
}

}  // namespace tf
