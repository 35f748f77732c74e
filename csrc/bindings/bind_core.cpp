// tinyfast.core: BlockManager, Scheduler and their configuration/output types.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>

#include "bindings/numpy_out.h"
#include "core/block_manager.h"
#include "core/errors.h"
#include "core/prefix_hash.h"
#include "core/scheduler.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tinyfast::bindings {
namespace {

using core::BlockManager;
using core::Scheduler;
using core::SchedulerConfig;
using core::StepOutput;

template <typename T>
using Vec1D = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Token ids from a NumPy array (any integer dtype, converted) or a Python sequence.
std::vector<int32_t> token_vector(nb::handle obj) {
  Vec1D<int32_t> arr;
  if (nb::try_cast(obj, arr, true)) return {arr.data(), arr.data() + arr.size()};
  try {
    return nb::cast<std::vector<int32_t>>(obj);
  } catch (const nb::cast_error&) {
    throw nb::type_error("token ids must be a 1-D sequence or array of integers in int32 range");
  }
}

uint64_t seed_or_random(std::optional<uint64_t> seed) {
  return seed && *seed != 0 ? *seed : core::random_hash_seed();
}

void bind_errors(nb::module_& m) {
  nb::exception<core::CapacityError>(m, "CapacityError", PyExc_ValueError);
  nb::exception<core::NoFreeBlocksError>(m, "NoFreeBlocksError", PyExc_RuntimeError);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const core::UnknownSequenceError& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    } catch (const core::InvariantError& e) {
      PyErr_SetString(PyExc_AssertionError, e.what());
    }
  });
}

void bind_block_manager(nb::module_& m) {
  nb::class_<BlockManager>(m, "BlockManager",
                           "Paged-KV block pool with ref counts, prefix cache (chained block hashes,\n"
                           "LRU eviction of freed cached blocks) and per-sequence block tables.")
      .def("__init__",
           [](BlockManager* self, int32_t num_blocks, int32_t block_size, bool enable_prefix_caching,
              std::optional<uint64_t> hash_seed) {
             new (self) BlockManager(num_blocks, block_size, enable_prefix_caching, seed_or_random(hash_seed));
           },
           "num_blocks"_a, "block_size"_a, "enable_prefix_caching"_a = true, "hash_seed"_a = nb::none())
      .def_prop_ro("num_blocks", &BlockManager::num_blocks)
      .def_prop_ro("block_size", &BlockManager::block_size)
      .def_prop_ro("enable_prefix_caching", &BlockManager::prefix_caching)
      .def_prop_ro("num_free_blocks", [](const BlockManager& b) { return b.pool().num_free(); },
                   "Blocks an allocation can take now: never-hashed free plus evictable cached blocks.")
      .def_prop_ro("num_evictable_blocks", [](const BlockManager& b) { return b.pool().num_evictable(); })
      .def_prop_ro("num_used_blocks", [](const BlockManager& b) { return b.pool().num_used(); })
      .def_prop_ro("num_cached_blocks", [](const BlockManager& b) { return b.pool().num_cached(); })
      .def_prop_ro("usage", [](const BlockManager& b) {
        return static_cast<double>(b.pool().num_used()) / b.num_blocks();
      })
      .def_prop_ro("stats", [](const BlockManager& b) {
        core::CacheStats s = b.stats();
        nb::dict d;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        d["evictions"] = s.evictions;
        return d;
      }, "Prefix-cache counters in blocks: hits, misses (at allocate) and evictions.")
      .def("match_prefix",
           [](const BlockManager& b, nb::handle token_ids, int64_t extra_key) {
             auto tokens = token_vector(token_ids);
             return static_cast<int32_t>(b.match(tokens, extra_key, -1).blocks.size()) * b.block_size();
           },
           "token_ids"_a, "extra_key"_a = 0, "Tokens covered by the longest cached prefix (no side effects).")
      .def("can_allocate",
           [](const BlockManager& b, nb::handle token_ids, int32_t num_slots, int64_t extra_key,
              int32_t max_cached_tokens) {
             auto tokens = token_vector(token_ids);
             return b.can_allocate(b.match(tokens, extra_key, max_cached_tokens), num_slots);
           },
           "token_ids"_a, "num_slots"_a, "extra_key"_a = 0, "max_cached_tokens"_a = -1)
      .def("allocate",
           [](BlockManager& b, int64_t seq_id, nb::handle token_ids, int64_t extra_key, int32_t max_cached_tokens) {
             auto tokens = token_vector(token_ids);
             core::PrefixMatch m = b.match(tokens, extra_key, max_cached_tokens);
             return static_cast<int32_t>(b.allocate(seq_id, m, extra_key).num_slots);
           },
           "seq_id"_a, "token_ids"_a, "extra_key"_a = 0, "max_cached_tokens"_a = -1,
           "Registers a sequence whose table starts with the longest cached prefix of full blocks\n"
           "within token_ids[:max_cached_tokens] (-1: all); returns the number of cached tokens.")
      .def("can_append", [](const BlockManager& b, int64_t seq_id, int32_t num_slots) {
        return b.can_append(b.get(seq_id), num_slots);
      }, "seq_id"_a, "num_slots"_a)
      .def("append_slots",
           [](BlockManager& b, int64_t seq_id, int32_t num_slots) {
             std::vector<core::BlockCopy> copies;
             b.append_slots(b.get(seq_id), num_slots, copies);
             return copies;
           },
           "seq_id"_a, "num_slots"_a,
           "Grows the table to cover num_slots token slots; returns copy-on-write (src, dst) block\n"
           "copies to perform. Raises NoFreeBlocksError, changing nothing, when blocks are short.")
      .def("cache_full_blocks",
           [](BlockManager& b, int64_t seq_id, nb::handle token_ids, int32_t num_computed_tokens) {
             auto tokens = token_vector(token_ids);
             b.cache_full_blocks(b.get(seq_id), tokens, num_computed_tokens);
           },
           "seq_id"_a, "token_ids"_a, "num_computed_tokens"_a)
      .def("fork", &BlockManager::fork, "parent_id"_a, "child_id"_a)
      .def("free", &BlockManager::free, "seq_id"_a)
      .def("has_sequence", &BlockManager::has, "seq_id"_a)
      .def("block_table", [](const BlockManager& b, int64_t seq_id) {
        return to_numpy(std::vector<int32_t>(b.get(seq_id).table));
      }, "seq_id"_a)
      .def("ref_count", [](const BlockManager& b, int32_t block_id) { return b.pool().ref_count(block_id); },
           "block_id"_a)
      .def("evictable_blocks", [](const BlockManager& b) { return to_numpy(b.pool().evictable_order()); },
           "Evictable block ids, next to be evicted first.")
      .def("check_invariants", &BlockManager::check_invariants,
           "Raises AssertionError if ref counts, free lists or the prefix cache are inconsistent.");
}

void bind_scheduler_config(nb::module_& m) {
  nb::class_<SchedulerConfig>(m, "SchedulerConfig")
      .def("__init__",
           [](SchedulerConfig* self, int32_t num_blocks, int32_t block_size, int32_t max_num_seqs,
              int32_t max_num_batched_tokens, std::optional<int32_t> max_model_len, bool enable_prefix_caching,
              std::optional<uint64_t> hash_seed) {
             SchedulerConfig c;
             c.num_blocks = num_blocks;
             c.block_size = block_size;
             c.max_num_seqs = max_num_seqs;
             c.max_num_batched_tokens = max_num_batched_tokens;
             if (max_model_len && *max_model_len <= 0)
               throw std::invalid_argument("max_model_len must be positive, got " + std::to_string(*max_model_len));
             c.max_model_len = max_model_len.value_or(0);
             c.enable_prefix_caching = enable_prefix_caching;
             c.hash_seed = hash_seed.value_or(0);
             c.validate();
             new (self) SchedulerConfig(c);
           },
           nb::kw_only(), "num_blocks"_a, "block_size"_a = 16, "max_num_seqs"_a = 256,
           "max_num_batched_tokens"_a = 2048, "max_model_len"_a = nb::none(), "enable_prefix_caching"_a = true,
           "hash_seed"_a = nb::none())
      .def_ro("num_blocks", &SchedulerConfig::num_blocks)
      .def_ro("block_size", &SchedulerConfig::block_size)
      .def_ro("max_num_seqs", &SchedulerConfig::max_num_seqs)
      .def_ro("max_num_batched_tokens", &SchedulerConfig::max_num_batched_tokens)
      .def_ro("max_model_len", &SchedulerConfig::max_model_len)
      .def_ro("enable_prefix_caching", &SchedulerConfig::enable_prefix_caching)
      .def_prop_ro("hash_seed", [](const SchedulerConfig& c) -> std::optional<uint64_t> {
        if (c.hash_seed_is_random) return std::nullopt;
        return c.hash_seed;
      }, "The prefix-hash seed given, or None when a random per-process seed is used.")
      .def("__repr__", [](const SchedulerConfig& c) {
        return "SchedulerConfig(num_blocks=" + std::to_string(c.num_blocks) + ", block_size=" +
               std::to_string(c.block_size) + ", max_num_seqs=" + std::to_string(c.max_num_seqs) +
               ", max_num_batched_tokens=" + std::to_string(c.max_num_batched_tokens) +
               ", max_model_len=" + std::to_string(c.max_model_len) +
               ", enable_prefix_caching=" + (c.enable_prefix_caching ? "True" : "False") + ")";
      });
}

void bind_step_output(nb::module_& m) {
  constexpr auto ref = nb::rv_policy::reference_internal;
  nb::class_<StepOutput>(m, "SchedulerOutput",
                         "One step's flattened batch as read-only NumPy views (S sequences, T tokens,\n"
                         "K sampled positions, P copy-on-write block copies).")
      .def_prop_ro("seq_ids", [](const StepOutput& o) { return view(o.seq_ids); }, ref)
      .def_prop_ro("num_scheduled_tokens", [](const StepOutput& o) { return view(o.num_scheduled_tokens); }, ref)
      .def_prop_ro("num_computed_tokens", [](const StepOutput& o) { return view(o.num_computed_tokens); }, ref)
      .def_prop_ro("context_lens", [](const StepOutput& o) { return view(o.context_lens); }, ref)
      .def_prop_ro("query_start_loc", [](const StepOutput& o) { return view(o.query_start_loc); }, ref)
      .def_prop_ro("token_ids", [](const StepOutput& o) { return view(o.token_ids); }, ref)
      .def_prop_ro("positions", [](const StepOutput& o) { return view(o.positions); }, ref)
      .def_prop_ro("slot_mapping", [](const StepOutput& o) { return view(o.slot_mapping); }, ref)
      .def_prop_ro("block_tables", [](const StepOutput& o) {
        return view(o.block_tables, {o.seq_ids.size(), static_cast<size_t>(o.max_blocks)});
      }, ref)
      .def_prop_ro("logits_indices", [](const StepOutput& o) { return view(o.logits_indices); }, ref)
      .def_prop_ro("sample_seq_ids", [](const StepOutput& o) { return view(o.sample_seq_ids); }, ref)
      .def_prop_ro("block_copies", [](const StepOutput& o) {
        return view(o.block_copies, {o.block_copies.size() / 2, 2});
      }, ref)
      .def_prop_ro("preempted_seq_ids", [](const StepOutput& o) { return view(o.preempted_seq_ids); }, ref)
      .def_prop_ro("num_seqs", &StepOutput::num_seqs)
      .def_prop_ro("num_tokens", &StepOutput::num_tokens)
      .def("__repr__", [](const StepOutput& o) {
        return "SchedulerOutput(num_seqs=" + std::to_string(o.num_seqs()) + ", num_tokens=" +
               std::to_string(o.num_tokens()) + ", num_sampled=" + std::to_string(o.sample_seq_ids.size()) + ")";
      });
}

void bind_scheduler(nb::module_& m) {
  nb::class_<Scheduler>(m, "Scheduler",
                        "Continuous-batching scheduler: decode first, then chunked prefill, FCFS admission,\n"
                        "recompute preemption of the newest running sequence when KV blocks run out.")
      .def(nb::init<SchedulerConfig>(), "config"_a)
      .def_prop_ro("config", &Scheduler::config, nb::rv_policy::copy)
      .def_prop_ro("block_manager", &Scheduler::block_manager, nb::rv_policy::reference_internal,
                   "The scheduler's BlockManager (inspect it; mutate only through the scheduler).")
      .def("add",
           [](Scheduler& s, int64_t seq_id, nb::handle prompt_token_ids, int64_t extra_key, bool skip_prefix_cache) {
             auto tokens = token_vector(prompt_token_ids);
             s.add(seq_id, tokens, extra_key, skip_prefix_cache);
           },
           "seq_id"_a, "prompt_token_ids"_a, "extra_key"_a = 0, nb::kw_only(), "skip_prefix_cache"_a = false,
           "Queues a request. CapacityError if it can never fit (empty, longer than max_model_len). "
           "skip_prefix_cache: never take prefix-cache hits, also when resumed after a preemption "
           "(every token is computed; its full blocks are still registered).")
      .def("step", &Scheduler::step, "Chooses the next batch and assigns KV slots.")
      .def("update",
           [](Scheduler& s, Vec1D<int64_t> seq_ids, Vec1D<int32_t> token_ids) {
             return to_numpy(s.update({seq_ids.data(), seq_ids.size()}, {token_ids.data(), token_ids.size()}));
           },
           "seq_ids"_a, "token_ids"_a,
           "Appends one sampled token per sequence; returns ids finished at max_model_len.")
      .def("finish", &Scheduler::finish, "seq_id"_a)
      .def("abort", &Scheduler::abort, "seq_id"_a)
      .def("preempt", &Scheduler::preempt, "seq_id"_a)
      .def("fork", &Scheduler::fork, "parent_id"_a, "child_id"_a)
      .def_prop_ro("num_waiting", &Scheduler::num_waiting)
      .def_prop_ro("num_running", &Scheduler::num_running)
      .def_prop_ro("num_preemptions", &Scheduler::num_preemptions)
      .def("has_unfinished", &Scheduler::has_unfinished)
      .def("tokens", [](const Scheduler& s, int64_t seq_id) {
        return to_numpy(std::vector<int32_t>(s.sequence(seq_id).tokens));
      }, "seq_id"_a)
      .def("num_computed_tokens", [](const Scheduler& s, int64_t seq_id) { return s.sequence(seq_id).num_computed; },
           "seq_id"_a)
      .def("num_cached_tokens", [](const Scheduler& s, int64_t seq_id) { return s.sequence(seq_id).num_cached_tokens; },
           "seq_id"_a, "Prefix-cache hit, in tokens, at the sequence's last admission.")
      .def("num_prompt_tokens", [](const Scheduler& s, int64_t seq_id) { return s.sequence(seq_id).num_prompt_tokens; },
           "seq_id"_a)
      .def("status", [](const Scheduler& s, int64_t seq_id) {
        return std::string(s.sequence(seq_id).status == core::SeqStatus::Running ? "running" : "waiting");
      }, "seq_id"_a)
      .def("waiting_ids", [](const Scheduler& s) { return to_numpy(s.waiting_ids()); })
      .def("running_ids", [](const Scheduler& s) { return to_numpy(s.running_ids()); });
}

}  // namespace

void bind_core(nb::module_& m) {
  bind_errors(m);
  bind_block_manager(m);
  bind_scheduler_config(m);
  bind_step_output(m);
  bind_scheduler(m);
}

}  // namespace tinyfast::bindings
