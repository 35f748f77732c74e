#include "core/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/errors.h"
#include "core/prefix_hash.h"

namespace tinyfast::core {

void SchedulerConfig::validate() {
  auto positive = [](const char* name, int64_t v) {
    if (v <= 0) throw std::invalid_argument(std::string(name) + " must be positive, got " + std::to_string(v));
  };
  positive("num_blocks", num_blocks);
  positive("block_size", block_size);
  positive("max_num_seqs", max_num_seqs);
  positive("max_num_batched_tokens", max_num_batched_tokens);
  int64_t pool_tokens = static_cast<int64_t>(num_blocks) * block_size;
  if (max_model_len == 0) max_model_len = static_cast<int32_t>(std::min<int64_t>(pool_tokens, INT32_MAX));
  positive("max_model_len", max_model_len);
  if (max_model_len > pool_tokens)
    throw std::invalid_argument("max_model_len " + std::to_string(max_model_len) + " needs more KV slots than the pool has (" +
                                std::to_string(num_blocks) + " blocks x " + std::to_string(block_size) + " = " +
                                std::to_string(pool_tokens) + "); one full-length sequence must always fit");
  if (pool_tokens > INT32_MAX) throw std::invalid_argument("KV pool has more than 2^31 slots; slot ids are int32");
  if (hash_seed == 0) {
    hash_seed = random_hash_seed();
    hash_seed_is_random = true;
  }
}

namespace {
SchedulerConfig validated(SchedulerConfig c) {
  c.validate();
  return c;
}
}  // namespace

Scheduler::Scheduler(SchedulerConfig config)
    : config_(validated(config)),
      bm_(config_.num_blocks, config_.block_size, config_.enable_prefix_caching, config_.hash_seed) {}

Sequence& Scheduler::find(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) throw UnknownSequenceError("unknown sequence id " + std::to_string(seq_id));
  return *it->second;
}

const Sequence& Scheduler::sequence(int64_t seq_id) const { return const_cast<Scheduler*>(this)->find(seq_id); }

void Scheduler::add(int64_t seq_id, std::span<const int32_t> prompt, int64_t extra_key, bool skip_prefix_cache) {
  if (prompt.empty()) throw CapacityError("request " + std::to_string(seq_id) + " has an empty prompt");
  if (static_cast<int64_t>(prompt.size()) > config_.max_model_len)
    throw CapacityError("request " + std::to_string(seq_id) + " has " + std::to_string(prompt.size()) +
                        " prompt tokens, more than max_model_len " + std::to_string(config_.max_model_len));
  if (seqs_.count(seq_id)) throw std::invalid_argument("sequence id " + std::to_string(seq_id) + " is already in use");
  auto seq = std::make_unique<Sequence>();
  seq->id = seq_id;
  seq->arrival = next_arrival_++;
  seq->tokens.assign(prompt.begin(), prompt.end());
  seq->num_prompt_tokens = static_cast<int32_t>(prompt.size());
  seq->extra_key = extra_key;
  seq->skip_prefix_cache = skip_prefix_cache;
  waiting_.push_back(seq.get());
  seqs_.emplace(seq_id, std::move(seq));
}

void Scheduler::insert_running(Sequence* seq) {
  auto pos = std::upper_bound(running_.begin(), running_.end(), seq,
                              [](const Sequence* a, const Sequence* b) { return a->arrival < b->arrival; });
  running_.insert(pos, seq);
  seq->status = SeqStatus::Running;
}

void Scheduler::remove_from_queues(Sequence& seq) {
  if (seq.status == SeqStatus::Running) {
    running_.erase(std::find(running_.begin(), running_.end(), &seq));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), &seq));
  }
}

void Scheduler::do_preempt(Sequence& seq, std::vector<int64_t>* preempted) {
  if (seq.status != SeqStatus::Running) throw std::invalid_argument("sequence " + std::to_string(seq.id) + " is not running");
  running_.erase(std::find(running_.begin(), running_.end(), &seq));
  // Its full blocks keep their hashes, so resuming is mostly prefix-cache hits.
  bm_.free(seq.id);
  seq.blocks = nullptr;
  seq.num_computed = 0;
  seq.planned_tokens = 0;
  seq.status = SeqStatus::Waiting;
  waiting_.push_front(&seq);
  ++num_preemptions_;
  if (preempted) preempted->push_back(seq.id);
}

void Scheduler::preempt(int64_t seq_id) { do_preempt(find(seq_id), nullptr); }

int32_t Scheduler::tokens_that_fit(const Sequence& seq, int32_t wanted) const {
  const SeqBlocks& sb = *seq.blocks;
  if (bm_.can_append(sb, seq.num_computed + wanted)) return wanted;
  const int32_t bs = bm_.block_size();
  int64_t capacity = (static_cast<int64_t>(sb.table.size()) + bm_.pool().num_free()) * bs;
  // A shared partly filled last block costs one extra block to copy.
  if (sb.num_slots % bs != 0 && bm_.pool().ref_count(sb.table.back()) > 1) capacity -= bs;
  return static_cast<int32_t>(std::clamp<int64_t>(capacity - seq.num_computed, 0, wanted));
}

void Scheduler::schedule_running(bool decode_pass, int32_t& budget, int32_t& seq_budget,
                                 std::vector<Planned>& plan, std::vector<PlannedCopy>& copies,
                                 std::vector<int64_t>& preempted) {
  for (size_t i = 0; i < running_.size(); ++i) {
    if (budget == 0 || seq_budget == 0) return;
    Sequence* seq = running_[i];
    int32_t remaining = seq->remaining();
    if (seq->planned_tokens > 0 || remaining == 0) continue;  // done, or awaiting its sampled token
    if ((remaining == 1) != decode_pass) continue;
    int32_t n = std::min(remaining, budget);
    bool self_preempted = false;
    while (!bm_.can_append(*seq->blocks, seq->num_computed + n)) {
      Sequence* victim = running_.back();
      if (victim == seq) {
        // Nothing newer is left to preempt. A prefill chunk shrinks to what
        // fits before the sequence gives up its own blocks.
        int32_t fit = decode_pass ? 0 : tokens_that_fit(*seq, n);
        if (fit > 0) {
          n = fit;
          break;
        }
        do_preempt(*seq, &preempted);
        self_preempted = true;
        break;
      }
      if (victim->planned_tokens > 0) {  // planned earlier this step: give its share back
        budget += victim->planned_tokens;
        ++seq_budget;
        plan.erase(std::find_if(plan.begin(), plan.end(), [&](const Planned& p) { return p.seq == victim; }));
      }
      do_preempt(*victim, &preempted);
    }
    if (self_preempted) return;  // it was the newest: nothing after it remains
    std::vector<BlockCopy> new_copies;
    bm_.append_slots(*seq->blocks, seq->num_computed + n, new_copies);
    for (const BlockCopy& c : new_copies) copies.push_back({seq, c});
    seq->planned_tokens = n;
    plan.push_back({seq, n});
    budget -= n;
    --seq_budget;
  }
}

void Scheduler::admit_waiting(int32_t& budget, int32_t& seq_budget, std::vector<Planned>& plan,
                              std::vector<PlannedCopy>& copies) {
  while (!waiting_.empty() && budget > 0 && seq_budget > 0) {
    Sequence* seq = waiting_.front();
    // At least one token is always computed so the step yields logits to sample.
    PrefixMatch m = bm_.match(seq->tokens, seq->extra_key, seq->skip_prefix_cache ? 0 : seq->num_tokens() - 1);
    int32_t cached = static_cast<int32_t>(m.blocks.size()) * bm_.block_size();
    int32_t n = std::min(seq->num_tokens() - cached, budget);
    if (!bm_.can_allocate(m, cached + n)) return;  // FCFS: later arrivals wait behind the head
    waiting_.pop_front();
    seq->blocks = &bm_.allocate(seq->id, m, seq->extra_key);
    seq->num_computed = cached;
    seq->num_cached_tokens = cached;
    std::vector<BlockCopy> new_copies;
    bm_.append_slots(*seq->blocks, cached + n, new_copies);
    for (const BlockCopy& c : new_copies) copies.push_back({seq, c});
    insert_running(seq);
    seq->planned_tokens = n;
    plan.push_back({seq, n});
    budget -= n;
    --seq_budget;
  }
}

StepOutput Scheduler::step() {
  StepOutput out;
  int32_t budget = config_.max_num_batched_tokens;
  int32_t seq_budget = config_.max_num_seqs;
  std::vector<Planned> plan;
  std::vector<PlannedCopy> copies;
  plan.reserve(running_.size() + 8);
  schedule_running(/*decode_pass=*/true, budget, seq_budget, plan, copies, out.preempted_seq_ids);
  schedule_running(/*decode_pass=*/false, budget, seq_budget, plan, copies, out.preempted_seq_ids);
  // Admitting right after a preemption would only thrash the pool.
  if (out.preempted_seq_ids.empty()) admit_waiting(budget, seq_budget, plan, copies);
  fill_output(plan, copies, out);
  return out;
}

void Scheduler::fill_output(const std::vector<Planned>& plan, const std::vector<PlannedCopy>& copies, StepOutput& out) {
  const int32_t bs = bm_.block_size();
  const size_t S = plan.size();
  int32_t T = 0, max_blocks = 0;
  for (const Planned& p : plan) {
    T += p.num_tokens;
    max_blocks = std::max<int32_t>(max_blocks, (p.seq->num_computed + p.num_tokens + bs - 1) / bs);
  }
  out.seq_ids.resize(S);
  out.num_scheduled_tokens.resize(S);
  out.num_computed_tokens.resize(S);
  out.context_lens.resize(S);
  out.query_start_loc.resize(S + 1);
  out.token_ids.resize(T);
  out.positions.resize(T);
  out.slot_mapping.resize(T);
  out.max_blocks = max_blocks;
  out.block_tables.assign(S * max_blocks, -1);
  out.query_start_loc[0] = 0;

  int32_t t = 0;
  for (size_t i = 0; i < S; ++i) {
    Sequence& seq = *plan[i].seq;
    const int32_t n = plan[i].num_tokens, start = seq.num_computed, end = start + n;
    const std::vector<int32_t>& table = seq.blocks->table;
    out.seq_ids[i] = seq.id;
    out.num_scheduled_tokens[i] = n;
    out.num_computed_tokens[i] = start;
    out.context_lens[i] = end;
    out.query_start_loc[i + 1] = t + n;
    const int32_t row_blocks = (end + bs - 1) / bs;
    std::copy_n(table.begin(), row_blocks, out.block_tables.begin() + i * max_blocks);
    for (int32_t pos = start; pos < end; ++pos, ++t) {
      out.token_ids[t] = seq.tokens[pos];
      out.positions[t] = pos;
      out.slot_mapping[t] = table[pos / bs] * bs + pos % bs;
    }
    seq.num_computed = end;
    seq.planned_tokens = 0;
    bm_.cache_full_blocks(*seq.blocks, seq.tokens, end);
    if (end == seq.num_tokens()) {
      seq.awaiting_token = true;
      out.logits_indices.push_back(t - 1);
      out.sample_seq_ids.push_back(seq.id);
    }
  }
  for (const PlannedCopy& c : copies) {
    if (c.owner->status != SeqStatus::Running) continue;  // preempted later in the step: blocks gone
    out.block_copies.push_back(c.copy.first);
    out.block_copies.push_back(c.copy.second);
  }
}

std::vector<int64_t> Scheduler::update(std::span<const int64_t> seq_ids, std::span<const int32_t> token_ids) {
  if (seq_ids.size() != token_ids.size())
    throw std::invalid_argument("update: " + std::to_string(seq_ids.size()) + " sequence ids but " +
                                std::to_string(token_ids.size()) + " tokens");
  // Validate everything before changing anything.
  std::vector<Sequence*> targets(seq_ids.size(), nullptr);
  for (size_t i = 0; i < seq_ids.size(); ++i) {
    auto it = seqs_.find(seq_ids[i]);
    if (it == seqs_.end()) continue;  // aborted since the step
    Sequence* seq = it->second.get();
    if (!seq->awaiting_token) {
      for (size_t j = 0; j < i; ++j)
        if (targets[j]) targets[j]->awaiting_token = true;
      throw std::invalid_argument("sequence " + std::to_string(seq_ids[i]) +
                                  " was not sampled in the last step (or got its token twice)");
    }
    seq->awaiting_token = false;  // so a duplicate id in this call is caught too
    targets[i] = seq;
  }
  std::vector<int64_t> finished;
  for (size_t i = 0; i < targets.size(); ++i) {
    Sequence* seq = targets[i];
    if (!seq) continue;
    seq->tokens.push_back(token_ids[i]);
    if (seq->num_tokens() >= config_.max_model_len) {
      finished.push_back(seq->id);
      finish(seq->id);
    }
  }
  return finished;
}

void Scheduler::finish(int64_t seq_id) {
  Sequence& seq = find(seq_id);
  remove_from_queues(seq);
  if (seq.blocks) bm_.free(seq_id);
  seqs_.erase(seq_id);
}

bool Scheduler::abort(int64_t seq_id) {
  if (!seqs_.count(seq_id)) return false;
  finish(seq_id);
  return true;
}

void Scheduler::fork(int64_t parent_id, int64_t child_id) {
  Sequence& parent = find(parent_id);
  if (parent.status != SeqStatus::Running || !parent.awaiting_token)
    throw std::invalid_argument("fork: sequence " + std::to_string(parent_id) + " must be running and just sampled");
  if (seqs_.count(child_id)) throw std::invalid_argument("sequence id " + std::to_string(child_id) + " is already in use");
  bm_.fork(parent_id, child_id);
  auto child = std::make_unique<Sequence>(parent);
  child->id = child_id;
  child->arrival = next_arrival_++;
  child->blocks = &bm_.get(child_id);
  child->planned_tokens = 0;
  insert_running(child.get());
  seqs_.emplace(child_id, std::move(child));
}

std::vector<int64_t> Scheduler::waiting_ids() const {
  std::vector<int64_t> ids;
  for (const Sequence* s : waiting_) ids.push_back(s->id);
  return ids;
}

std::vector<int64_t> Scheduler::running_ids() const {
  std::vector<int64_t> ids;
  for (const Sequence* s : running_) ids.push_back(s->id);
  return ids;
}

}  // namespace tinyfast::core
