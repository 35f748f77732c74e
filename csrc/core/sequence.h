#pragma once
// A request as the scheduler sees it: its tokens (prompt, then generated)
// and how many of them already have KV in the cache.
#include <cstdint>
#include <vector>

#include "core/block_manager.h"

namespace tinyfast::core {

enum class SeqStatus : uint8_t { Waiting, Running };

struct Sequence {
  int64_t id = 0;
  uint64_t arrival = 0;  // admission priority: lower is older
  std::vector<int32_t> tokens;
  int32_t num_prompt_tokens = 0;
  int32_t num_computed = 0;      // tokens whose KV is in the cache (as of the last step)
  int32_t num_cached_tokens = 0; // prefix-cache hit at the last admission
  int64_t extra_key = 0;
  // Never take prefix-cache hits (its full blocks are still registered for others): a request
  // that wants logits at every prompt position (prompt logprobs) must compute all of them.
  bool skip_prefix_cache = false;
  SeqStatus status = SeqStatus::Waiting;
  bool awaiting_token = false;   // the last step sampled for it; update() appends
  SeqBlocks* blocks = nullptr;   // owned by the BlockManager while running
  int32_t planned_tokens = 0;    // step-local: tokens given in the step being built

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t remaining() const { return num_tokens() - num_computed; }
};

}  // namespace tinyfast::core
