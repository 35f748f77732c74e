// write_kv: copy this step's K/V rows into their slots of the paged pools.
// Semantics of csrc/ops/write_kv.h: slot = block * block_size + offset,
// -1 = padding token (skipped). Out-of-range slots are rejected by the op
// before launch; the kernel skips them too so a bad slot cannot write outside
// the pool.
#pragma once

#include "kernels/defines.h"
#include "kernels/params.h"

namespace tf {

// One thread per (element of a row, token).
template <typename T>
inline void write_kv_impl(const device T* k, const device T* v, device T* k_cache, device T* v_cache,
                          const device int* slot_mapping, constant WriteKVParams& p, uint token, uint elem) {
  if (static_cast<int>(token) >= p.num_tokens || static_cast<int>(elem) >= p.row_elems) return;
  const int slot = slot_mapping[token];
  if (slot < 0 || slot >= p.num_slots) return;
  const ulong src = static_cast<ulong>(token) * p.row_elems + elem;
  const ulong dst = static_cast<ulong>(slot) * p.row_elems + elem;
  k_cache[dst] = k[src];
  v_cache[dst] = v[src];
}

}  // namespace tf
