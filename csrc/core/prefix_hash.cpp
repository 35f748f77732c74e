#include "core/prefix_hash.h"

#include <random>

namespace tinyfast::core {
namespace {

// Finalizer of MurmurHash3 (a public, well-studied 64-bit avalanche mix).
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline uint64_t absorb(uint64_t h, uint64_t word) {
  return mix64(h ^ (word * 0x9e3779b97f4a7c15ULL)) + 0x632be59bd9b4e019ULL;
}

}  // namespace

uint64_t hash_block(uint64_t seed, uint64_t parent_hash, int64_t extra_key,
                    const int32_t* token_ids, int num_tokens) {
  uint64_t h = mix64(seed + 0x243f6a8885a308d3ULL);
  h = absorb(h, parent_hash);
  h = absorb(h, static_cast<uint64_t>(extra_key));
  h = absorb(h, static_cast<uint64_t>(num_tokens));
  int i = 0;
  for (; i + 1 < num_tokens; i += 2) {
    uint64_t word = static_cast<uint32_t>(token_ids[i]) |
                    (static_cast<uint64_t>(static_cast<uint32_t>(token_ids[i + 1])) << 32);
    h = absorb(h, word);
  }
  if (i < num_tokens) h = absorb(h, static_cast<uint32_t>(token_ids[i]));
  h = mix64(h);
  return h == 0 ? 1 : h;
}

uint64_t random_hash_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace tinyfast::core
