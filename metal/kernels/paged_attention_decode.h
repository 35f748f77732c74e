// Decode attention (one query per sequence, at position context_len - 1).
//
// One simdgroup per (sequence, kv head, chunk of its GQA query heads): the K/V
// rows of the kv head are read once for all the query heads that share them.
// Keys go in rounds of 32, one key per lane: each lane computes its key's
// logits for every head, the simdgroup reduces max and sum with simd_max /
// simd_sum (online softmax), the probabilities go through threadgroup memory,
// and for P.V every lane owns head_dim / 32 output columns (lane + 32 i),
// so V rows are read coalesced.
//
// Split-K: with partition_size > 0 each threadgroup covers one partition of
// the keys and writes its unnormalized accumulator, max and sum; the reduce
// kernel merges partitions (flash-decoding). A partition without visible keys
// writes max = -inf, sum = 0 and drops out of the merge.
#pragma once

#include "kernels/defines.h"
#include "kernels/paged_kv.h"
#include "kernels/params.h"

namespace tf {

struct DecodeItem {
  int seq, kvh, head0, num_heads, part;
};

inline DecodeItem decode_item(uint3 tgid, constant PagedAttentionParams& p) {
  const int group = p.num_heads / p.num_kv_heads;
  const int chunks = (group + p.heads_per_group - 1) / p.heads_per_group;
  DecodeItem it;
  it.kvh = static_cast<int>(tgid.x) / chunks;
  const int chunk = static_cast<int>(tgid.x) % chunks;
  it.head0 = it.kvh * group + chunk * p.heads_per_group;
  it.num_heads = min(p.heads_per_group, group - chunk * p.heads_per_group);
  it.seq = static_cast<int>(tgid.y);
  it.part = static_cast<int>(tgid.z);
  return it;
}

// Runs the online softmax over keys [lo, hi) of one item; leaves the
// unnormalized accumulators (lane's columns), max and sum per head.
template <typename T, int D>
inline void decode_attend(const device T* q, const device T* k_cache, const device T* v_cache,
                          const device int* table, constant PagedAttentionParams& p, const DecodeItem it, int lo,
                          int hi, threadgroup float* smem, uint lane, thread float (&m)[kDecodeMaxHeads],
                          thread float (&l)[kDecodeMaxHeads], thread float (&acc)[kDecodeMaxHeads][D / kSimd]) {
  threadgroup float* qs = smem;
  threadgroup float* probs = smem + kDecodeMaxHeads * D;
  const int nh = it.num_heads;
  for (int i = lane; i < nh * D; i += kSimd)
    qs[i] = to_float(q[(static_cast<long>(it.seq) * p.num_heads + it.head0 + i / D) * D + i % D]) * p.scale;
  for (int g = 0; g < kDecodeMaxHeads; ++g) {
    m[g] = -metal::numeric_limits<float>::infinity();
    l[g] = 0.0f;
    for (int i = 0; i < D / kSimd; ++i) acc[g][i] = 0.0f;
  }
  simdgroup_barrier(mem_flags::mem_threadgroup);

  for (int base = lo; base < hi; base += kSimd) {
    const int pos = base + static_cast<int>(lane);
    const bool valid = pos < hi;
    float s[kDecodeMaxHeads];
    for (int g = 0; g < nh; ++g) s[g] = -metal::numeric_limits<float>::infinity();
    if (valid) {
      const device T* krow = kv_row(k_cache, table, pos, it.kvh, p, p.k_stride_block, p.k_stride_token,
                                    p.k_stride_head);
      for (int g = 0; g < nh; ++g) {
        float dot = 0.0f;
        for (int d = 0; d < D; ++d) dot += qs[g * D + d] * to_float(krow[d]);
        s[g] = apply_softcap(dot, p);
      }
    }
    for (int g = 0; g < nh; ++g) {
      // Key `base` is always visible, so the round's max is finite.
      const float m_new = max(m[g], simd_max(s[g]));
      const float alpha = metal::exp(m[g] - m_new);
      const float pr = valid ? metal::exp(s[g] - m_new) : 0.0f;
      l[g] = l[g] * alpha + simd_sum(pr);
      m[g] = m_new;
      for (int i = 0; i < D / kSimd; ++i) acc[g][i] *= alpha;
      probs[g * kSimd + lane] = pr;
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);
    const int n = min(kSimd, hi - base);
    for (int j = 0; j < n; ++j) {
      const device T* vrow = kv_row(v_cache, table, base + j, it.kvh, p, p.v_stride_block, p.v_stride_token,
                                    p.v_stride_head);
      for (int i = 0; i < D / kSimd; ++i) {
        const float vv = to_float(vrow[lane + kSimd * i]);
        for (int g = 0; g < nh; ++g) acc[g][i] += probs[g * kSimd + j] * vv;
      }
    }
    // The next round overwrites probs.
    simdgroup_barrier(mem_flags::mem_threadgroup);
  }
}

// Visible keys of the decode query: [window start, context_len).
inline void decode_range(int ctx, constant PagedAttentionParams& p, thread int& lo, thread int& hi) {
  lo = window_start(ctx - 1, p);
  hi = ctx;
}

template <typename T, int D>
inline void paged_attention_decode_impl(const device T* q, const device T* k_cache, const device T* v_cache,
                                        const device int* block_tables, const device int* context_lens,
                                        device T* out, constant PagedAttentionParams& p, threadgroup float* smem,
                                        uint3 tgid, uint lane) {
  const DecodeItem it = decode_item(tgid, p);
  int lo, hi;
  decode_range(context_lens[it.seq], p, lo, hi);
  float m[kDecodeMaxHeads], l[kDecodeMaxHeads], acc[kDecodeMaxHeads][D / kSimd];
  decode_attend<T, D>(q, k_cache, v_cache, block_tables + static_cast<long>(it.seq) * p.max_blocks, p, it, lo, hi,
                      smem, lane, m, l, acc);
  for (int g = 0; g < it.num_heads; ++g) {
    const float inv = l[g] > 0.0f ? 1.0f / l[g] : 0.0f;
    device T* o = out + (static_cast<long>(it.seq) * p.num_heads + it.head0 + g) * D;
    for (int i = 0; i < D / kSimd; ++i) o[lane + kSimd * i] = from_float<T>(acc[g][i] * inv);
  }
}

template <typename T, int D>
inline void paged_attention_decode_split_impl(const device T* q, const device T* k_cache,
                                              const device T* v_cache, const device int* block_tables,
                                              const device int* context_lens, device float* part_acc,
                                              device float* part_max, device float* part_sum,
                                              constant PagedAttentionParams& p, threadgroup float* smem,
                                              uint3 tgid, uint lane) {
  const DecodeItem it = decode_item(tgid, p);
  int lo, hi;
  decode_range(context_lens[it.seq], p, lo, hi);
  lo = max(lo, it.part * p.partition_size);
  hi = min(hi, (it.part + 1) * p.partition_size);
  float m[kDecodeMaxHeads], l[kDecodeMaxHeads], acc[kDecodeMaxHeads][D / kSimd];
  decode_attend<T, D>(q, k_cache, v_cache, block_tables + static_cast<long>(it.seq) * p.max_blocks, p, it, lo, hi,
                      smem, lane, m, l, acc);
  for (int g = 0; g < it.num_heads; ++g) {
    const long row = (static_cast<long>(it.part) * p.num_seqs + it.seq) * p.num_heads + it.head0 + g;
    for (int i = 0; i < D / kSimd; ++i) part_acc[row * D + lane + kSimd * i] = acc[g][i];
    if (lane == 0) {
      part_max[row] = m[g];
      part_sum[row] = l[g];
    }
  }
}

// Merges the partitions of one (head, sequence) in partition order.
template <typename T, int D>
inline void paged_attention_decode_reduce_impl(const device float* part_acc, const device float* part_max,
                                               const device float* part_sum, device T* out,
                                               constant PagedAttentionParams& p, uint3 tgid, uint lane) {
  const int head = static_cast<int>(tgid.x), seq = static_cast<int>(tgid.y);
  const long stride = static_cast<long>(p.num_seqs) * p.num_heads;  // between partitions
  const long row0 = static_cast<long>(seq) * p.num_heads + head;
  float m_max = -metal::numeric_limits<float>::infinity();
  for (int part = 0; part < p.num_partitions; ++part) m_max = max(m_max, part_max[part * stride + row0]);
  float sum = 0.0f;
  float o[D / kSimd];
  for (int i = 0; i < D / kSimd; ++i) o[i] = 0.0f;
  for (int part = 0; part < p.num_partitions; ++part) {
    const long row = part * stride + row0;
    const float pm = part_max[row];
    if (!(pm > -metal::numeric_limits<float>::infinity())) continue;  // no visible keys there
    const float w = metal::exp(pm - m_max);
    sum += w * part_sum[row];
    for (int i = 0; i < D / kSimd; ++i) o[i] += w * part_acc[row * D + lane + kSimd * i];
  }
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  device T* dst = out + row0 * D;
  for (int i = 0; i < D / kSimd; ++i) dst[lane + kSimd * i] = from_float<T>(o[i] * inv);
}

}  // namespace tf
