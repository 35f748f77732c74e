// Paged attention driver: cuts the batch into work items, runs them on the
// shared thread pool, merges split-K partitions. The arithmetic lives in
// paged_attention_kernel.h, built here with baseline flags and in
// paged_attention_avx2.cpp with AVX2/FMA/F16C.
//
// Work items are (query tile, kv heads, key partition):
//  * a query tile is up to block_q consecutive queries of one sequence, times
//    the `group` query heads sharing a kv head, so K/V rows are read once per
//    group (GQA/MQA); small tiles take several kv heads at once;
//  * sequences with few queries in the step (decode, small prefill chunks) are
//    split over partitions of kPartition keys so one long sequence still uses
//    every core; the partitions are merged afterwards in order.
// How a sequence is cut depends on its own lengths only, and the threads pull
// items from a shared counter without influencing any item's arithmetic, so
// results are deterministic and identical alone or in any batch.
#define TF_ATTN_NS baseline
#include "cpu/paged_attention_kernel.h"
#undef TF_ATTN_NS

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/thread_pool.h"

namespace tinyfast::cpu {
namespace {

using attn::KernelConfig;
using attn::Kernels;
using attn::Partials;
using attn::TilePlan;
using attn::Workspace;

const Kernels& select_kernels() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool use_avx2 = [] {
    const std::string level = kernel_level();
    return level == "avx2" || level == "avx512";
  }();
  if (use_avx2) return attn::avx2::kernels();
#endif
  return attn::baseline::kernels();
}

int floor_pow2(int x) {
  int p = 1;
  while (p * 2 <= x) p *= 2;
  return p;
}

KernelConfig make_config(const PagedAttentionArgs& a) {
  KernelConfig c;
  c.group = a.num_heads / a.num_kv_heads;
  c.head_dim_pad = (a.head_dim + 7) / 8 * 8;
  // About 8K floats of K (and of V) per tile and of accumulators per item:
  // L1/L2 sized, and block_k stays a power of two in [16, 64] dividing kPartition.
  c.block_k = std::clamp(floor_pow2(std::max(1, 8192 / c.head_dim_pad)), 16, 64);
  const int rows_target = std::max(8, 8192 / c.head_dim_pad);
  c.block_q = std::max(1, rows_target / c.group);
  return c;
}

// Scratch reused across calls by the calling (MLX stream) thread.
struct Scratch {
  std::vector<float> floats;
  std::vector<const void*> ptrs;
  std::vector<const char*> raw;
  std::vector<int32_t> ints;
  std::vector<float> partials;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

void paged_attention(const PagedAttentionArgs& a) {
  if (a.num_seqs <= 0 || a.num_tokens <= 0 || a.num_heads <= 0 || a.head_dim <= 0) return;
  const Kernels& kern = select_kernels();
  const KernelConfig cfg = make_config(a);
  const int KVH = a.num_kv_heads;
  const int P = AttentionTiling::kPartition;
  const bool decode = a.query_start_loc == nullptr;

  // Plan: tiles in batch order, item_end[t] = items up to and including tile t.
  std::vector<TilePlan> tiles;
  std::vector<int64_t> item_end;
  int64_t partial_rows = 0;
  for (int s = 0; s < a.num_seqs; ++s) {
    const int32_t q0 = decode ? s : a.query_start_loc[s];
    const int32_t n = decode ? 1 : a.query_start_loc[s + 1] - q0;
    const int32_t ctx = a.context_lens[s];
    // The caller validated the metadata; these guards only make sure that bad
    // metadata can never address q, out or the block table out of bounds.
    if (n <= 0 || n > ctx || q0 < 0 || static_cast<int64_t>(q0) + n > a.num_tokens) continue;
    if (static_cast<int64_t>(ctx) > static_cast<int64_t>(a.max_blocks) * a.block_size) continue;
    const bool split = n <= AttentionTiling::kSplitMaxQueries;
    for (int32_t j0 = 0; j0 < n; j0 += cfg.block_q) {
      const int32_t j1 = std::min(n, j0 + cfg.block_q);
      TilePlan t;
      t.seq = s;
      t.q_begin = q0 + j0;
      t.q_end = q0 + j1;
      t.context_len = ctx;
      t.first_pos = ctx - n + j0;
      const int32_t last_pos = ctx - n + j1 - 1;
      t.key_lo = a.sliding_window > 0 ? std::max(0, t.first_pos - a.sliding_window + 1) : 0;
      t.key_hi = a.causal ? last_pos + 1 : ctx;
      t.part_begin = t.key_lo / P;
      t.num_parts = split ? (t.key_hi + P - 1) / P - t.part_begin : 1;
      if (t.num_parts > 1) {
        t.partial_offset = partial_rows;
        partial_rows += static_cast<int64_t>(t.num_parts) * KVH * (j1 - j0) * cfg.group;
      }
      tiles.push_back(t);
    }
  }
  if (tiles.empty()) return;

  // Small tiles (decode, split-K) take several kv heads per item, within the
  // workspace's row budget, so each token's K/V row is read whole (measured:
  // 7.3 -> 5.2 ms for a 32/8/128 f32 decode at 4k context); but not so many
  // that the batch has too few items to keep every thread busy. Which kv heads
  // share an item does not change any row's arithmetic.
  ThreadPool& pool = ThreadPool::global();
  const int rows = cfg.block_q * cfg.group;
  int64_t num_items = 0;
  for (int kv_cap = KVH;; kv_cap = std::max(1, kv_cap / 2)) {
    num_items = 0;
    item_end.clear();
    for (TilePlan& t : tiles) {
      const int rows1 = (t.q_end - t.q_begin) * cfg.group;
      t.kv_group = 1;  // full prefill tiles use the whole row budget alone
      for (int d = std::min(kv_cap, rows / rows1); d > 1; --d)
        if (KVH % d == 0) {
          t.kv_group = d;
          break;
        }
      num_items += static_cast<int64_t>(t.num_parts) * (KVH / t.kv_group);
      item_end.push_back(num_items);
    }
    if (kv_cap == 1 || num_items >= 2 * pool.num_threads()) break;
  }

  const int workers = static_cast<int>(std::min<int64_t>(pool.num_threads(), num_items));
  const int64_t dp = cfg.head_dim_pad, bk = cfg.block_k;
  const int64_t floats_per_worker = rows * dp          // q
                                    + 2 * bk * dp      // k, v
                                    + rows * bk        // logits
                                    + 2 * rows         // m, l
                                    + rows * dp;       // acc
  const int64_t ptrs_per_worker = 2 * (bk + 8);
  const int64_t raw_per_worker = 4 * KVH * (bk + 8);
  const int64_t ints_per_worker = 3 * static_cast<int64_t>(rows);

  Scratch& sc = scratch();
  // 64 floats of slack per worker keeps workers' hot rows off shared cache lines.
  const int64_t fstride = floats_per_worker + 64;
  if (static_cast<int64_t>(sc.floats.size()) < workers * fstride) sc.floats.resize(workers * fstride);
  if (static_cast<int64_t>(sc.ptrs.size()) < workers * ptrs_per_worker) sc.ptrs.resize(workers * ptrs_per_worker);
  if (static_cast<int64_t>(sc.raw.size()) < workers * raw_per_worker) sc.raw.resize(workers * raw_per_worker);
  if (static_cast<int64_t>(sc.ints.size()) < workers * ints_per_worker) sc.ints.resize(workers * ints_per_worker);
  const int64_t partial_floats = partial_rows * (dp + 2);
  if (static_cast<int64_t>(sc.partials.size()) < partial_floats) sc.partials.resize(partial_floats);

  std::vector<Workspace> ws(workers);
  for (int w = 0; w < workers; ++w) {
    float* f = sc.floats.data() + w * fstride;
    Workspace& x = ws[w];
    x.q = f, f += rows * dp;
    x.k = f, f += bk * dp;
    x.v = f, f += bk * dp;
    x.logits = f, f += rows * bk;
    x.m = f, f += rows;
    x.l = f, f += rows;
    x.acc = f;
    x.kp = sc.ptrs.data() + w * ptrs_per_worker;
    x.vp = x.kp + bk + 8;
    x.kraw = sc.raw.data() + w * raw_per_worker;
    x.vraw = x.kraw + 2 * KVH * (bk + 8);
    x.vis_lo = sc.ints.data() + w * ints_per_worker;
    x.vis_hi = x.vis_lo + rows;
    x.active = x.vis_hi + rows;
  }
  Partials partials{sc.partials.data(), sc.partials.data() + partial_rows * dp,
                    sc.partials.data() + partial_rows * (dp + 1)};

  // Items are pulled from a shared counter, last first: in a causal prefill the
  // last query tiles are the most expensive, so they start first.
  std::atomic<int64_t> next{0};
  pool.parallel_for(workers, [&](int64_t w_begin, int64_t w_end) {
    for (int64_t w = w_begin; w < w_end; ++w) {
      for (;;) {
        const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
        if (i >= num_items) break;
        const int64_t item = num_items - 1 - i;
        const size_t t = std::upper_bound(item_end.begin(), item_end.end(), item) - item_end.begin();
        const int64_t local = item - (t == 0 ? 0 : item_end[t - 1]);
        const int kv_blocks = KVH / tiles[t].kv_group;
        kern.run_item(a, cfg, tiles[t], static_cast<int>(local % kv_blocks) * tiles[t].kv_group,
                      static_cast<int>(local / kv_blocks), ws[w], partials);
      }
    }
  });

  if (partial_rows == 0) return;
  std::vector<int32_t> split_tiles;
  for (size_t t = 0; t < tiles.size(); ++t)
    if (tiles[t].num_parts > 1) split_tiles.push_back(static_cast<int32_t>(t));
  const int64_t merges = static_cast<int64_t>(split_tiles.size()) * KVH;
  std::atomic<int64_t> next_merge{0};
  const int merge_workers = static_cast<int>(std::min<int64_t>(workers, merges));
  pool.parallel_for(merge_workers, [&](int64_t w_begin, int64_t w_end) {
    for (int64_t w = w_begin; w < w_end; ++w) {
      for (;;) {
        const int64_t i = next_merge.fetch_add(1, std::memory_order_relaxed);
        if (i >= merges) break;
        kern.combine(a, cfg, tiles[split_tiles[i / KVH]], static_cast<int>(i % KVH), ws[w], partials);
      }
    }
  });
}

}  // namespace tinyfast::cpu
