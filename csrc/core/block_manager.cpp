#include "core/block_manager.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/errors.h"
#include "core/prefix_hash.h"

namespace tinyfast::core {

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching, uint64_t hash_seed)
    : pool_(num_blocks, block_size), prefix_caching_(enable_prefix_caching), hash_seed_(hash_seed) {}

SeqBlocks& BlockManager::get(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) throw UnknownSequenceError("unknown sequence id " + std::to_string(seq_id));
  return it->second;
}

const SeqBlocks& BlockManager::get(int64_t seq_id) const {
  return const_cast<BlockManager*>(this)->get(seq_id);
}

PrefixMatch BlockManager::match(std::span<const int32_t> tokens, int64_t extra_key, int32_t max_cached_tokens) const {
  PrefixMatch m;
  if (!prefix_caching_) return m;
  size_t limit = tokens.size();
  if (max_cached_tokens >= 0) limit = std::min(limit, static_cast<size_t>(max_cached_tokens));
  const int32_t bs = block_size();
  m.num_eligible = static_cast<int32_t>(limit / bs);
  uint64_t parent = 0;
  for (int32_t i = 0; i < m.num_eligible; ++i) {
    const int32_t* block_tokens = tokens.data() + static_cast<size_t>(i) * bs;
    uint64_t h = hash_block(hash_seed_, parent, extra_key, block_tokens, bs);
    int32_t id = pool_.lookup(h, parent, extra_key, block_tokens);
    if (id < 0) break;
    m.blocks.push_back(id);
    m.hashes.push_back(h);
    if (pool_.is_evictable(id)) ++m.num_evictable;
    parent = h;
  }
  return m;
}

int32_t BlockManager::blocks_needed(const PrefixMatch& m, int32_t num_slots) const {
  return std::max<int32_t>(0, blocks_for(num_slots) - static_cast<int32_t>(m.blocks.size()));
}

bool BlockManager::can_allocate(const PrefixMatch& m, int32_t num_slots) const {
  // Reviving evictable hits removes them from what new blocks can be taken from.
  return blocks_needed(m, num_slots) <= pool_.num_free() - m.num_evictable;
}

SeqBlocks& BlockManager::allocate(int64_t seq_id, const PrefixMatch& m, int64_t extra_key) {
  if (seqs_.count(seq_id)) throw std::invalid_argument("sequence id " + std::to_string(seq_id) + " already has blocks");
  SeqBlocks& s = seqs_[seq_id];
  s.extra_key = extra_key;
  for (int32_t id : m.blocks) pool_.retain(id);
  s.table = m.blocks;
  s.hashes = m.hashes;
  s.num_slots = static_cast<int32_t>(m.blocks.size()) * block_size();
  hits_ += static_cast<int64_t>(m.blocks.size());
  misses_ += m.num_eligible - static_cast<int64_t>(m.blocks.size());
  return s;
}

bool BlockManager::needs_copy_on_write(const SeqBlocks& s, int32_t num_slots) const {
  return num_slots > s.num_slots && s.num_slots % block_size() != 0 &&
         pool_.ref_count(s.table.back()) > 1;
}

bool BlockManager::can_append(const SeqBlocks& s, int32_t num_slots) const {
  int32_t needed = std::max<int32_t>(0, blocks_for(num_slots) - static_cast<int32_t>(s.table.size()));
  if (needs_copy_on_write(s, num_slots)) ++needed;
  return needed <= pool_.num_free();
}

void BlockManager::append_slots(SeqBlocks& s, int32_t num_slots, std::vector<BlockCopy>& copies) {
  if (num_slots <= s.num_slots) return;
  if (!can_append(s, num_slots))
    throw NoFreeBlocksError("not enough free KV blocks to grow a sequence to " + std::to_string(num_slots) + " slots");
  if (needs_copy_on_write(s, num_slots)) {
    int32_t shared = s.table.back();
    int32_t fresh = pool_.take();
    pool_.release(shared);
    s.table.back() = fresh;
    copies.emplace_back(shared, fresh);
  }
  while (static_cast<int32_t>(s.table.size()) < blocks_for(num_slots)) s.table.push_back(pool_.take());
  s.num_slots = num_slots;
}

void BlockManager::cache_full_blocks(SeqBlocks& s, std::span<const int32_t> tokens, int32_t num_computed) {
  if (!prefix_caching_) return;
  const int32_t bs = block_size();
  int32_t full = std::min<int32_t>(num_computed, static_cast<int32_t>(tokens.size())) / bs;
  full = std::min<int32_t>(full, static_cast<int32_t>(s.table.size()));
  for (int32_t i = static_cast<int32_t>(s.hashes.size()); i < full; ++i) {
    uint64_t parent = i == 0 ? 0 : s.hashes[i - 1];
    const int32_t* block_tokens = tokens.data() + static_cast<size_t>(i) * bs;
    uint64_t h = hash_block(hash_seed_, parent, s.extra_key, block_tokens, bs);
    pool_.register_hash(s.table[i], h, parent, s.extra_key, block_tokens);
    s.hashes.push_back(h);
  }
}

void BlockManager::fork(int64_t parent_id, int64_t child_id) {
  if (seqs_.count(child_id)) throw std::invalid_argument("sequence id " + std::to_string(child_id) + " already has blocks");
  SeqBlocks copy = get(parent_id);
  for (int32_t id : copy.table) pool_.retain(id);
  seqs_.emplace(child_id, std::move(copy));
}

void BlockManager::free(int64_t seq_id) {
  SeqBlocks& s = get(seq_id);
  // Tail first: the end of a sequence is the least likely part to be shared,
  // so it should be evicted before the prefix.
  for (auto it = s.table.rbegin(); it != s.table.rend(); ++it) pool_.release(*it);
  seqs_.erase(seq_id);
}

void BlockManager::check_invariants() const {
  pool_.check_invariants();
  std::vector<int32_t> owners(num_blocks(), 0);
  for (const auto& [id, s] : seqs_) {
    if (static_cast<int32_t>(s.table.size()) != blocks_for(s.num_slots))
      throw InvariantError("sequence " + std::to_string(id) + " has a table that does not match its slots");
    if (s.hashes.size() > s.table.size()) throw InvariantError("sequence " + std::to_string(id) + " hashes more blocks than it has");
    for (int32_t b : s.table) ++owners[b];
  }
  for (int32_t b = 0; b < num_blocks(); ++b)
    if (owners[b] != pool_.ref_count(b))
      throw InvariantError("block " + std::to_string(b) + " has ref count " + std::to_string(pool_.ref_count(b)) +
                           " but " + std::to_string(owners[b]) + " owners");
}

}  // namespace tinyfast::core
