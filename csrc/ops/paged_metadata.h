#pragma once
// Checks of the step metadata the paged ops read (slot mapping, block tables,
// context lengths, query start offsets). They run on host memory: in the op
// function when the arrays are already evaluated (the usual eager case, so the
// error is raised at the call), and again inside the evaluation task before
// any kernel touches the pools (compiled graphs, lazy inputs).
#include <cstdint>
#include <stdexcept>

#include <mlx/array.h>

namespace tinyfast::ops {

// An argument of the wrong dtype; the bindings raise it as TypeError.
struct DtypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Every slot is -1 (skip) or in [0, num_slots), and no slot is written twice.
void check_slot_mapping(const char* op, const int32_t* slots, int64_t num_tokens, int64_t num_slots);

// For each sequence s: context_lens[s] >= min_context and fits the table
// (max_blocks * block_size); the table entries it uses are in [0, num_blocks).
// With query_start_loc (prefill): qsl[0] == 0, non-decreasing, qsl[S] ==
// num_tokens, and no sequence has more queries than context tokens.
void check_paged_metadata(const char* op, const int32_t* block_tables, int64_t num_seqs, int64_t max_blocks,
                          const int32_t* query_start_loc, const int32_t* context_lens, int64_t num_tokens,
                          int64_t num_blocks, int64_t block_size, int32_t min_context);

// True when `a` holds its data now (evaluated, not a compile tracer) in
// row-contiguous layout, so the op function can read it.
bool host_readable(const mlx::core::array& a);

}  // namespace tinyfast::ops
