#pragma once
// CPU scatter of new keys/values into the paged pools (see csrc/ops/write_kv.h).
#include <cstdint>

namespace tinyfast::cpu {

struct WriteKVArgs {
  int elem_bytes = 4;
  const void* k = nullptr;  // [num_tokens, row]: row = num_kv_heads * head_dim elements, contiguous
  const void* v = nullptr;
  void* k_cache = nullptr;  // [num_slots, row], row-contiguous
  void* v_cache = nullptr;
  const int32_t* slot_mapping = nullptr;  // [num_tokens]; < 0 skips the token
  int64_t num_tokens = 0, row_elems = 0, num_slots = 0;
};

// Rows whose slot is outside [0, num_slots) are skipped, so even unvalidated
// metadata cannot write outside the pools.
void write_kv(const WriteKVArgs& args);

}  // namespace tinyfast::cpu
