// Scatter of new K/V rows into the paged pools, in place.
#include "cpu/write_kv.h"

#include <algorithm>
#include <cstring>

#include "cpu/thread_pool.h"

namespace tinyfast::cpu {

void write_kv(const WriteKVArgs& a) {
  if (a.num_tokens <= 0 || a.row_elems <= 0) return;
  const int64_t row_bytes = a.row_elems * a.elem_bytes;
  const char* k = static_cast<const char*>(a.k);
  const char* v = static_cast<const char*>(a.v);
  char* kc = static_cast<char*>(a.k_cache);
  char* vc = static_cast<char*>(a.v_cache);
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t slot = a.slot_mapping[t];
      if (slot < 0 || slot >= a.num_slots) continue;
      std::memcpy(kc + slot * row_bytes, k + t * row_bytes, row_bytes);
      std::memcpy(vc + slot * row_bytes, v + t * row_bytes, row_bytes);
    }
  };
  // Threads only pay off for large writes (a prefill chunk); a decode step
  // writes a few KB.
  const int64_t min_chunk = std::max<int64_t>(1, (256 << 10) / (2 * row_bytes));
  ThreadPool::global().parallel_for(a.num_tokens, body, min_chunk);
}

}  // namespace tinyfast::cpu
