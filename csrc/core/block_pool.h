#pragma once
// The KV block pool: ref counts, two free lists and the prefix-cache map.
//
// Free blocks live in one of two intrusive doubly linked lists threaded
// through the block array (O(1) push/pop/remove, no allocation):
//   - `free_`: never hashed (or hash dropped); handed out first;
//   - `evictable_`: ref count 0 but still holding a prefix hash, in LRU order
//     (front = released longest ago); evicted only when `free_` is empty.
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace tinyfast::core {

class IntrusiveList {
 public:
  void attach(std::vector<int32_t>* prev, std::vector<int32_t>* next) {
    prev_ = prev;
    next_ = next;
  }
  void push_back(int32_t id);
  int32_t pop_front();
  void remove(int32_t id);
  int32_t front() const { return head_; }
  int32_t next_of(int32_t id) const { return (*next_)[id]; }
  int32_t size() const { return size_; }

 private:
  std::vector<int32_t>* prev_ = nullptr;
  std::vector<int32_t>* next_ = nullptr;
  int32_t head_ = -1, tail_ = -1, size_ = 0;
};

class BlockPool {
 public:
  BlockPool(int32_t num_blocks, int32_t block_size);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  // Blocks an allocation can take now (never-hashed free + evictable).
  int32_t num_free() const { return free_.size() + evictable_.size(); }
  int32_t num_evictable() const { return evictable_.size(); }
  int32_t num_used() const { return num_blocks_ - num_free(); }
  int64_t num_evictions() const { return evictions_; }

  // A block with ref count 1, from `free_` or else by evicting the LRU cached block.
  int32_t take();
  // One more owner; revives an evictable block.
  void retain(int32_t id);
  // One owner fewer; at zero the block becomes free or evictable.
  void release(int32_t id);

  int32_t ref_count(int32_t id) const { return blocks_[check(id)].ref_count; }
  bool is_evictable(int32_t id) const { return blocks_[check(id)].list == kEvictable; }
  uint64_t hash_of(int32_t id) const { return blocks_[check(id)].hash; }
  const int32_t* tokens_of(int32_t id) const {
    return &tokens_[static_cast<size_t>(check(id)) * block_size_];
  }

  // The cached block for this exact (hash, parent, extra key, tokens), or -1.
  int32_t lookup(uint64_t hash, uint64_t parent_hash, int64_t extra_key,
                 const int32_t* token_ids) const;
  // Caches an owned full block; false (block stays unhashed) if an identical
  // block is cached already.
  bool register_hash(int32_t id, uint64_t hash, uint64_t parent_hash,
                     int64_t extra_key, const int32_t* token_ids);
  int32_t num_cached() const { return static_cast<int32_t>(cached_.size()); }

  // Walks the whole pool; throws InvariantError on any inconsistency.
  void check_invariants() const;
  // Block ids in eviction order (next evicted first), for tests and debugging.
  std::vector<int32_t> evictable_order() const;

 private:
  enum ListId : uint8_t { kNone = 0, kFree = 1, kEvictable = 2 };
  struct Block {
    int32_t ref_count = 0;
    uint64_t hash = 0;  // 0: not in the prefix cache
    uint64_t parent_hash = 0;
    int64_t extra_key = 0;
    ListId list = kNone;
  };
  int32_t check(int32_t id) const;
  void evict(int32_t id);

  int32_t num_blocks_, block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> prev_, next_;
  std::vector<int32_t> tokens_;  // token ids of hashed blocks, for collision checks
  IntrusiveList free_, evictable_;
  std::unordered_map<uint64_t, int32_t> cached_;
  int64_t evictions_ = 0;
};

}  // namespace tinyfast::core
