#pragma once
// Chained hash of a full KV block: it covers the parent block's hash, so equal
// hashes mean equal whole prefixes (up to collisions, which lookups rule out by
// comparing stored token ids).
#include <cstdint>

namespace tinyfast::core {

// 0 is reserved for "no parent" / "not hashed"; block hashes are never 0.
uint64_t hash_block(uint64_t seed, uint64_t parent_hash, int64_t extra_key,
                    const int32_t* token_ids, int num_tokens);

// A fresh per-process seed so that cache hits cannot be predicted (and so
// forged) by someone who only controls prompts.
uint64_t random_hash_seed();

}  // namespace tinyfast::core
