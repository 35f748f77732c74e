#pragma once
// Continuous-batching scheduler: FCFS admission with a token budget per step,
// decode before chunked prefill, recompute preemption of the newest running
// sequence when blocks run out.
//
// Liveness: the config guarantees one max_model_len sequence fits the whole
// pool, running sequences are served oldest first and only newer ones are
// preempted, and a blocked waiting head blocks later arrivals. So the oldest
// request always progresses and every request finishes.
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/block_manager.h"
#include "core/sequence.h"
#include "core/step_output.h"

namespace tinyfast::core {

struct SchedulerConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t max_num_seqs = 256;
  int32_t max_num_batched_tokens = 2048;
  int32_t max_model_len = 0;  // 0: num_blocks * block_size
  bool enable_prefix_caching = true;
  uint64_t hash_seed = 0;     // 0: random per process
  bool hash_seed_is_random = false;  // the seed was drawn, not given (keep it private)

  // Fills defaults and throws std::invalid_argument when inconsistent.
  void validate();
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config);

  const SchedulerConfig& config() const { return config_; }
  BlockManager& block_manager() { return bm_; }

  void add(int64_t seq_id, std::span<const int32_t> prompt, int64_t extra_key, bool skip_prefix_cache = false);
  StepOutput step();
  // Appends one sampled token per id (unknown ids are skipped: aborted since
  // the step); returns ids finished because they reached max_model_len.
  std::vector<int64_t> update(std::span<const int64_t> seq_ids, std::span<const int32_t> token_ids);
  void finish(int64_t seq_id);
  bool abort(int64_t seq_id);
  void preempt(int64_t seq_id);
  void fork(int64_t parent_id, int64_t child_id);

  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  bool has_unfinished() const { return !seqs_.empty(); }
  int64_t num_preemptions() const { return num_preemptions_; }
  const Sequence& sequence(int64_t seq_id) const;
  std::vector<int64_t> waiting_ids() const;
  std::vector<int64_t> running_ids() const;

 private:
  struct Planned {
    Sequence* seq;
    int32_t num_tokens;
  };
  struct PlannedCopy {
    Sequence* owner;
    BlockCopy copy;
  };

  Sequence& find(int64_t seq_id);
  void remove_from_queues(Sequence& seq);
  void insert_running(Sequence* seq);
  void do_preempt(Sequence& seq, std::vector<int64_t>* preempted);
  void schedule_running(bool decode_pass, int32_t& budget, int32_t& seq_budget,
                        std::vector<Planned>& plan, std::vector<PlannedCopy>& copies,
                        std::vector<int64_t>& preempted);
  void admit_waiting(int32_t& budget, int32_t& seq_budget, std::vector<Planned>& plan,
                     std::vector<PlannedCopy>& copies);
  int32_t tokens_that_fit(const Sequence& seq, int32_t wanted) const;
  void fill_output(const std::vector<Planned>& plan, const std::vector<PlannedCopy>& copies, StepOutput& out);

  SchedulerConfig config_;
  BlockManager bm_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> seqs_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // sorted by arrival: back is the newest
  uint64_t next_arrival_ = 0;
  int64_t num_preemptions_ = 0;
};

}  // namespace tinyfast::core
