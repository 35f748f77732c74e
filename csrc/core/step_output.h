#pragma once
// Everything Python needs to build one flattened ("ragged") batch, as flat
// arrays: S scheduled sequences, T tokens, K sampled positions, P block copies.
#include <cstdint>
#include <vector>

namespace tinyfast::core {

struct StepOutput {
  std::vector<int64_t> seq_ids;               // [S]
  std::vector<int32_t> num_scheduled_tokens;  // [S]
  std::vector<int32_t> num_computed_tokens;   // [S] before this step
  std::vector<int32_t> context_lens;          // [S] after this step
  std::vector<int32_t> query_start_loc;       // [S + 1]
  std::vector<int32_t> token_ids;             // [T]
  std::vector<int32_t> positions;             // [T]
  std::vector<int32_t> slot_mapping;          // [T] block * block_size + offset
  std::vector<int32_t> block_tables;          // [S, max_blocks], padded with -1
  int32_t max_blocks = 0;
  std::vector<int32_t> logits_indices;        // [K] rows of the flat batch to sample
  std::vector<int64_t> sample_seq_ids;        // [K]
  std::vector<int32_t> block_copies;          // [P, 2] (src, dst), done before the forward
  std::vector<int64_t> preempted_seq_ids;

  int32_t num_seqs() const { return static_cast<int32_t>(seq_ids.size()); }
  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
};

}  // namespace tinyfast::core
