#include "core/block_pool.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/errors.h"

namespace tinyfast::core {

void IntrusiveList::push_back(int32_t id) {
  (*prev_)[id] = tail_;
  (*next_)[id] = -1;
  if (tail_ >= 0) (*next_)[tail_] = id;
  else head_ = id;
  tail_ = id;
  ++size_;
}

int32_t IntrusiveList::pop_front() {
  int32_t id = head_;
  if (id >= 0) remove(id);
  return id;
}

void IntrusiveList::remove(int32_t id) {
  int32_t p = (*prev_)[id], n = (*next_)[id];
  if (p >= 0) (*next_)[p] = n;
  else head_ = n;
  if (n >= 0) (*prev_)[n] = p;
  else tail_ = p;
  (*prev_)[id] = (*next_)[id] = -1;
  --size_;
}

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  if (num_blocks <= 0) throw std::invalid_argument("num_blocks must be positive, got " + std::to_string(num_blocks));
  if (block_size <= 0) throw std::invalid_argument("block_size must be positive, got " + std::to_string(block_size));
  blocks_.resize(num_blocks);
  prev_.assign(num_blocks, -1);
  next_.assign(num_blocks, -1);
  tokens_.assign(static_cast<size_t>(num_blocks) * block_size, 0);
  free_.attach(&prev_, &next_);
  evictable_.attach(&prev_, &next_);
  for (int32_t i = 0; i < num_blocks; ++i) {
    blocks_[i].list = kFree;
    free_.push_back(i);
  }
}

int32_t BlockPool::check(int32_t id) const {
  if (id < 0 || id >= num_blocks_)
    throw std::out_of_range("block id " + std::to_string(id) + " out of range [0, " +
                            std::to_string(num_blocks_) + ")");
  return id;
}

void BlockPool::evict(int32_t id) {
  Block& b = blocks_[id];
  cached_.erase(b.hash);
  b.hash = b.parent_hash = 0;
  b.extra_key = 0;
  ++evictions_;
}

int32_t BlockPool::take() {
  int32_t id = free_.pop_front();
  if (id < 0) {
    id = evictable_.pop_front();
    if (id < 0) throw NoFreeBlocksError("KV block pool exhausted");
    evict(id);
  }
  Block& b = blocks_[id];
  b.list = kNone;
  b.ref_count = 1;
  return id;
}

void BlockPool::retain(int32_t id) {
  Block& b = blocks_[check(id)];
  if (b.ref_count == 0) {
    if (b.list == kEvictable) evictable_.remove(id);
    else if (b.list == kFree) free_.remove(id);
    b.list = kNone;
  }
  ++b.ref_count;
}

void BlockPool::release(int32_t id) {
  Block& b = blocks_[check(id)];
  if (b.ref_count <= 0) throw InvariantError("double free of KV block " + std::to_string(id));
  if (--b.ref_count > 0) return;
  if (b.hash != 0) {
    b.list = kEvictable;
    evictable_.push_back(id);
  } else {
    b.list = kFree;
    free_.push_back(id);
  }
}

int32_t BlockPool::lookup(uint64_t hash, uint64_t parent_hash, int64_t extra_key,
                          const int32_t* token_ids) const {
  auto it = cached_.find(hash);
  if (it == cached_.end()) return -1;
  const Block& b = blocks_[it->second];
  if (b.parent_hash != parent_hash || b.extra_key != extra_key) return -1;
  if (std::memcmp(tokens_of(it->second), token_ids, sizeof(int32_t) * block_size_) != 0) return -1;
  return it->second;
}

bool BlockPool::register_hash(int32_t id, uint64_t hash, uint64_t parent_hash,
                              int64_t extra_key, const int32_t* token_ids) {
  Block& b = blocks_[check(id)];
  if (b.ref_count <= 0) throw InvariantError("caching a block nobody owns");
  if (b.hash != 0 || cached_.count(hash)) return false;
  b.hash = hash;
  b.parent_hash = parent_hash;
  b.extra_key = extra_key;
  std::memcpy(&tokens_[static_cast<size_t>(id) * block_size_], token_ids, sizeof(int32_t) * block_size_);
  cached_.emplace(hash, id);
  return true;
}

std::vector<int32_t> BlockPool::evictable_order() const {
  std::vector<int32_t> order;
  for (int32_t id = evictable_.front(); id >= 0; id = evictable_.next_of(id)) order.push_back(id);
  return order;
}

void BlockPool::check_invariants() const {
  auto fail = [](const std::string& what) { throw InvariantError("BlockPool: " + what); };
  std::vector<uint8_t> seen(num_blocks_, 0);
  int32_t n_free = 0, n_evictable = 0;
  for (int32_t id = free_.front(); id >= 0; id = free_.next_of(id)) {
    if (seen[id]++) fail("block " + std::to_string(id) + " twice in free lists");
    if (blocks_[id].list != kFree || blocks_[id].ref_count != 0 || blocks_[id].hash != 0)
      fail("free block " + std::to_string(id) + " has owners, a hash or the wrong list tag");
    ++n_free;
  }
  for (int32_t id = evictable_.front(); id >= 0; id = evictable_.next_of(id)) {
    if (seen[id]++) fail("block " + std::to_string(id) + " twice in free lists");
    if (blocks_[id].list != kEvictable || blocks_[id].ref_count != 0 || blocks_[id].hash == 0)
      fail("evictable block " + std::to_string(id) + " has owners, no hash or the wrong list tag");
    ++n_evictable;
  }
  if (n_free != free_.size() || n_evictable != evictable_.size()) fail("list sizes disagree with contents");
  for (int32_t id = 0; id < num_blocks_; ++id) {
    const Block& b = blocks_[id];
    if (!seen[id] && (b.ref_count <= 0 || b.list != kNone))
      fail("block " + std::to_string(id) + " is neither free nor owned");
    if (b.hash != 0) {
      auto it = cached_.find(b.hash);
      if (it == cached_.end() || it->second != id) fail("hashed block " + std::to_string(id) + " missing from the cache map");
    }
  }
  for (const auto& [hash, id] : cached_)
    if (id < 0 || id >= num_blocks_ || blocks_[id].hash != hash) fail("cache map points at a block with another hash");
}

}  // namespace tinyfast::core
