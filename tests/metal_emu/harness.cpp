// The emulator library: every metal/*.metal file compiled as C++ against the
// shim, and a small C ABI for ctypes (see emu.py).
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "launch.h"
#include "runtime.h"
// After every standard header: the shim defines `device`, `thread`, ... as
// empty macros.
#include "metal_shim.h"

namespace tfemu {
std::map<std::string, KernelEntry>& registry() {
  static std::map<std::string, KernelEntry> r;
  return r;
}
}  // namespace tfemu

#include "all_kernels.inc"  // one #include per metal/*.metal file, written by emu.py

#include "kernels/params.h"

namespace {
std::string g_names;
std::set<std::string> g_launched;
std::string g_launched_names;
}  // namespace

extern "C" {

// sizeof of the parameter structs, so the Python mirrors can be checked.
int tfemu_param_size(const char* name) {
  const std::string n = name;
  if (n == "WriteKVParams") return sizeof(tf::WriteKVParams);
  if (n == "PagedAttentionParams") return sizeof(tf::PagedAttentionParams);
  if (n == "QMatvecParams") return sizeof(tf::QMatvecParams);
  return -1;
}

// offsetof of a parameter struct field, or -1: the Python mirrors are checked
// field by field, so a reordered or renamed field cannot go unnoticed.
int tfemu_param_offset(const char* strct, const char* field) {
  const std::string s = strct, f = field;
#define TF_FIELD(S, F) \
  if (s == #S && f == #F) return static_cast<int>(offsetof(tf::S, F));
  TF_FIELD(WriteKVParams, num_tokens)
  TF_FIELD(WriteKVParams, row_elems)
  TF_FIELD(WriteKVParams, num_slots)
  TF_FIELD(PagedAttentionParams, num_seqs)
  TF_FIELD(PagedAttentionParams, num_tokens)
  TF_FIELD(PagedAttentionParams, num_heads)
  TF_FIELD(PagedAttentionParams, num_kv_heads)
  TF_FIELD(PagedAttentionParams, block_size)
  TF_FIELD(PagedAttentionParams, max_blocks)
  TF_FIELD(PagedAttentionParams, num_blocks)
  TF_FIELD(PagedAttentionParams, k_stride_block)
  TF_FIELD(PagedAttentionParams, k_stride_token)
  TF_FIELD(PagedAttentionParams, k_stride_head)
  TF_FIELD(PagedAttentionParams, v_stride_block)
  TF_FIELD(PagedAttentionParams, v_stride_token)
  TF_FIELD(PagedAttentionParams, v_stride_head)
  TF_FIELD(PagedAttentionParams, scale)
  TF_FIELD(PagedAttentionParams, softcap)
  TF_FIELD(PagedAttentionParams, sliding_window)
  TF_FIELD(PagedAttentionParams, causal)
  TF_FIELD(PagedAttentionParams, partition_size)
  TF_FIELD(PagedAttentionParams, num_partitions)
  TF_FIELD(PagedAttentionParams, heads_per_group)
  TF_FIELD(QMatvecParams, m)
  TF_FIELD(QMatvecParams, n)
  TF_FIELD(QMatvecParams, k)
  TF_FIELD(QMatvecParams, row_bytes)
#undef TF_FIELD
  return -1;
}

// Launch constants of params.h, so the Python drivers use the host's numbers.
int tfemu_constant(const char* name, int head_dim) {
  const std::string n = name;
  if (n == "decode_threadgroup_floats") return tf::decode_threadgroup_floats(head_dim);
  if (n == "prefill_threadgroup_floats") return tf::prefill_threadgroup_floats(head_dim);
  if (n == "kWriteKVThreads") return tf::kWriteKVThreads;
  if (n == "kDecodeMaxHeads") return tf::kDecodeMaxHeads;
  if (n == "kPrefillSimdgroups") return tf::kPrefillSimdgroups;
  if (n == "kPrefillRows") return tf::kPrefillRows;
  if (n == "kPrefillKeys") return tf::kPrefillKeys;
  if (n == "kQMatvecSimdgroups") return tf::kQMatvecSimdgroups;
  if (n == "kQMatvecRows") return tf::kQMatvecRows;
  return -1;
}

// Newline-separated host names of all registered entry points.
const char* tfemu_kernel_names() {
  g_names.clear();
  for (const auto& kv : tfemu::registry()) g_names += kv.first + "\n";
  return g_names.c_str();
}

const char* tfemu_launched_names() {
  g_launched_names.clear();
  for (const auto& n : g_launched) g_launched_names += n + "\n";
  return g_launched_names.c_str();
}

// Launches `name` on a grid of `grid` threadgroups of `group` threads.
// args[i] is the i-th buffer / constant argument; args[threadgroup_arg]
// (if >= 0) is replaced by the threadgroup's memory. Returns 0, or 1 with a
// message in `err`.
int tfemu_launch(const char* name, void** args, int num_args, int threadgroup_arg, const unsigned* grid,
                 const unsigned* group, unsigned long threadgroup_bytes, unsigned long long seed, char* err,
                 int err_len) {
  auto fail = [&](const std::string& msg) {
    std::snprintf(err, err_len, "%s", msg.c_str());
    return 1;
  };
  auto it = tfemu::registry().find(name);
  if (it == tfemu::registry().end()) return fail(std::string("no entry point named ") + name);
  if (num_args > 32) return fail("more than 32 arguments");
  if (it->second.num_args != num_args)
    return fail(std::string(name) + " takes " + std::to_string(it->second.num_args) + " arguments, got " +
                std::to_string(num_args));
  tfemu::LaunchConfig cfg;
  cfg.grid = {grid[0], grid[1], grid[2]};
  cfg.group = {group[0], group[1], group[2]};
  cfg.threadgroup_bytes = threadgroup_bytes;
  cfg.seed = seed;
  const auto& invoke = it->second.invoke;
  try {
    tfemu::run_grid(cfg, [&](const tfemu::LaneIds& ids) {
      void* a[32];
      for (int i = 0; i < num_args; ++i) a[i] = args[i];
      if (threadgroup_arg >= 0) a[threadgroup_arg] = ids.threadgroup_memory;
      invoke(a, ids);
    });
  } catch (const std::exception& e) {
    return fail(std::string(name) + ": " + e.what());
  }
  g_launched.insert(name);
  return 0;
}

}  // extern "C"
