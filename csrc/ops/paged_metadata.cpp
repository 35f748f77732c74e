#include "ops/paged_metadata.h"

#include <algorithm>
#include <string>
#include <vector>

namespace tinyfast::ops {
namespace {

[[noreturn]] void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(std::string(op) + ": " + msg);
}

}  // namespace

void check_slot_mapping(const char* op, const int32_t* slots, int64_t num_tokens, int64_t num_slots) {
  std::vector<int32_t> used;
  used.reserve(num_tokens);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int32_t s = slots[t];
    if (s == -1) continue;
    if (s < 0 || s >= num_slots)
      fail(op, "slot_mapping[" + std::to_string(t) + "] = " + std::to_string(s) +
                   " is outside the cache (num_blocks * block_size = " + std::to_string(num_slots) +
                   "; -1 marks a padding token)");
    used.push_back(s);
  }
  std::sort(used.begin(), used.end());
  auto dup = std::adjacent_find(used.begin(), used.end());
  if (dup != used.end()) fail(op, "slot " + std::to_string(*dup) + " appears twice in slot_mapping");
}

void check_paged_metadata(const char* op, const int32_t* block_tables, int64_t num_seqs, int64_t max_blocks,
                          const int32_t* qsl, const int32_t* context_lens, int64_t num_tokens, int64_t num_blocks,
                          int64_t block_size, int32_t min_context) {
  if (qsl) {
    if (qsl[0] != 0) fail(op, "query_start_loc[0] must be 0, got " + std::to_string(qsl[0]));
    for (int64_t s = 0; s < num_seqs; ++s)
      if (qsl[s + 1] < qsl[s])
        fail(op, "query_start_loc must be non-decreasing, but query_start_loc[" + std::to_string(s + 1) +
                     "] = " + std::to_string(qsl[s + 1]) + " < query_start_loc[" + std::to_string(s) +
                     "] = " + std::to_string(qsl[s]));
    if (qsl[num_seqs] != num_tokens)
      fail(op, "query_start_loc[-1] = " + std::to_string(qsl[num_seqs]) + " must equal the number of queries " +
                   std::to_string(num_tokens));
  }
  const int64_t capacity = max_blocks * block_size;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t ctx = context_lens[s];
    const std::string where = "context_lens[" + std::to_string(s) + "] = " + std::to_string(ctx);
    if (ctx < min_context) fail(op, where + " must be at least " + std::to_string(min_context));
    if (ctx > capacity)
      fail(op, where + " exceeds the block table capacity (" + std::to_string(max_blocks) + " blocks of " +
                   std::to_string(block_size) + " tokens)");
    if (qsl && qsl[s + 1] - qsl[s] > ctx)
      fail(op, "sequence " + std::to_string(s) + " has " + std::to_string(qsl[s + 1] - qsl[s]) +
                   " queries but only " + std::to_string(ctx) + " context tokens (its queries are the last ones)");
    const int32_t* row = block_tables + s * max_blocks;
    const int64_t used = (ctx + block_size - 1) / block_size;
    for (int64_t b = 0; b < used; ++b)
      if (row[b] < 0 || row[b] >= num_blocks)
        fail(op, "block_tables[" + std::to_string(s) + ", " + std::to_string(b) + "] = " + std::to_string(row[b]) +
                     " is not a block of the cache (num_blocks = " + std::to_string(num_blocks) + ")");
  }
}

bool host_readable(const mlx::core::array& a) {
  return !a.is_tracer() && a.is_available() && a.flags().row_contiguous;
}

}  // namespace tinyfast::ops
