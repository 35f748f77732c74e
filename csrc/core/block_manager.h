#pragma once
// Per-sequence block tables on top of the pool: prefix-cache reuse,
// slot growth with copy-on-write, fork and free. Check/act pairs
// (can_allocate/allocate, can_append/append_slots) keep every act all-or-nothing.
#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/block_pool.h"

namespace tinyfast::core {

struct SeqBlocks {
  std::vector<int32_t> table;   // block ids, in token order
  std::vector<uint64_t> hashes; // chained hashes of the leading full computed blocks
  int64_t extra_key = 0;
  int32_t num_slots = 0;        // token slots this sequence may write
};

struct PrefixMatch {
  std::vector<int32_t> blocks;
  std::vector<uint64_t> hashes;
  int32_t num_evictable = 0;  // hits that currently sit in the evictable list
  int32_t num_eligible = 0;   // full blocks that were looked up
};

struct CacheStats {
  int64_t hits = 0, misses = 0, evictions = 0;
};

using BlockCopy = std::pair<int32_t, int32_t>;  // (src, dst)

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching, uint64_t hash_seed);

  int32_t num_blocks() const { return pool_.num_blocks(); }
  int32_t block_size() const { return pool_.block_size(); }
  bool prefix_caching() const { return prefix_caching_; }
  const BlockPool& pool() const { return pool_; }
  CacheStats stats() const { return {hits_, misses_, pool_.num_evictions()}; }

  // Longest chain of cached full blocks within tokens[:max_cached_tokens]
  // (negative: all); no side effects.
  PrefixMatch match(std::span<const int32_t> tokens, int64_t extra_key, int32_t max_cached_tokens) const;
  // Blocks that must be newly taken to cover `num_slots` after `m`.
  int32_t blocks_needed(const PrefixMatch& m, int32_t num_slots) const;
  bool can_allocate(const PrefixMatch& m, int32_t num_slots) const;
  // New sequence whose table starts with the matched blocks; returns cached tokens.
  SeqBlocks& allocate(int64_t seq_id, const PrefixMatch& m, int64_t extra_key);

  bool can_append(const SeqBlocks& s, int32_t num_slots) const;
  // Grows `s` to cover num_slots (throws NoFreeBlocksError, changing nothing,
  // when it cannot); copy-on-write of a shared partly filled last block is
  // appended to `copies`.
  void append_slots(SeqBlocks& s, int32_t num_slots, std::vector<BlockCopy>& copies);
  // Caches every block fully covered by the first num_computed tokens.
  void cache_full_blocks(SeqBlocks& s, std::span<const int32_t> tokens, int32_t num_computed);
  void fork(int64_t parent_id, int64_t child_id);
  void free(int64_t seq_id);

  SeqBlocks& get(int64_t seq_id);
  const SeqBlocks& get(int64_t seq_id) const;
  bool has(int64_t seq_id) const { return seqs_.count(seq_id) != 0; }
  const std::unordered_map<int64_t, SeqBlocks>& sequences() const { return seqs_; }

  // Ref counts equal the number of tables holding each block, and the pool is consistent.
  void check_invariants() const;

 private:
  int32_t blocks_for(int32_t num_slots) const { return (num_slots + block_size() - 1) / block_size(); }
  bool needs_copy_on_write(const SeqBlocks& s, int32_t num_slots) const;

  BlockPool pool_;
  bool prefix_caching_;
  uint64_t hash_seed_;
  std::unordered_map<int64_t, SeqBlocks> seqs_;  // node-based: references stay valid
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace tinyfast::core
