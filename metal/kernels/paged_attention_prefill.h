// Varlen prefill attention (chunked prefill, prefix-cache hits): tiled flash
// attention on simdgroup matrices.
//
// A threadgroup handles kPrefillRows query rows (a tile) of one query head of
// one sequence: kPrefillSimdgroups simdgroups of 8 rows each. Per key tile of
// kPrefillKeys keys, all threads stage K (then V) rows from the paged pool
// into threadgroup memory as float; each simdgroup computes its 8 x 16 logits
// S = Q K^T with 8x8 simdgroup_multiply_accumulate, runs the online softmax
// on them (4 lanes per row, shuffles for the row max / sum), rescales its
// output tiles by diag(alpha) with a simdgroup_multiply, and accumulates
// O += P V. Q (scaled) and O live in simdgroup matrices for the whole key loop.
//
// Semantics (csrc/ops/paged_attention.h): sequence s owns queries
// query_start_loc[s] .. query_start_loc[s+1], the last of its context_lens[s]
// tokens; causal rows see keys p <= their position, every row sees keys with
// position - p < sliding_window; softcap after scale; a row without visible
// keys is 0.
#pragma once

#include "kernels/defines.h"
#include "kernels/paged_kv.h"
#include "kernels/params.h"

namespace tf {

// Stages rows [kt, kt + kPrefillKeys) of one kv head as float; rows at or past
// `hi` are zero (their probabilities are 0, and 0 * garbage could be NaN).
template <typename T, int D>
inline void stage_rows(threadgroup float* dst, const device T* pool, const device int* table, int kt, int hi,
                       int kvh, constant PagedAttentionParams& p, int sb, int st, int sh, uint tid) {
  for (int idx = static_cast<int>(tid); idx < kPrefillKeys * D; idx += kPrefillSimdgroups * kSimd) {
    const int j = idx / D, d = idx % D, pos = kt + j;
    dst[idx] = pos < hi ? to_float(kv_row(pool, table, pos, kvh, p, sb, st, sh)[d]) : 0.0f;
  }
}

template <typename T, int D>
inline void paged_attention_prefill_impl(const device T* q, const device T* k_cache, const device T* v_cache,
                                         const device int* block_tables, const device int* query_start_loc,
                                         const device int* context_lens, device T* out,
                                         constant PagedAttentionParams& p, threadgroup float* smem, uint3 tgid,
                                         uint tid, uint lane, uint sg) {
  constexpr int BK = kPrefillKeys, C = D / 8;
  const int head = static_cast<int>(tgid.x);
  // tgid.y enumerates the query tiles of all sequences in order; the host
  // cannot read query_start_loc, so it launches an upper bound and surplus
  // threadgroups exit (uniformly: the whole threadgroup returns).
  int seq = -1, tile = static_cast<int>(tgid.y);
  for (int s = 0; s < p.num_seqs; ++s) {
    const int tiles = (query_start_loc[s + 1] - query_start_loc[s] + kPrefillRows - 1) / kPrefillRows;
    if (tile < tiles) {
      seq = s;
      break;
    }
    tile -= tiles;
  }
  if (seq < 0) return;
  const int q_start = query_start_loc[seq];
  const int nq = query_start_loc[seq + 1] - q_start;
  const int ctx = context_lens[seq];
  const int first_pos = ctx - nq;
  const int kvh = head / (p.num_heads / p.num_kv_heads);
  const device int* table = block_tables + static_cast<long>(seq) * p.max_blocks;

  threadgroup float* kv = smem;
  threadgroup float* ps = smem + BK * D + static_cast<int>(sg) * kPrefillScratch;  // P [8][BK]
  threadgroup float* scratch = ps + 8 * BK;                                      // 8x8

  // Keys any row of the threadgroup can see.
  const int tile_first = first_pos + tile * kPrefillRows;
  const int tile_last = first_pos + min(nq, (tile + 1) * kPrefillRows) - 1;
  const int key_lo = window_start(tile_first, p);
  const int key_hi = p.causal ? tile_last + 1 : ctx;

  // This lane's softmax row (4 lanes per row) and its 4 key columns.
  const int row0 = tile * kPrefillRows + static_cast<int>(sg) * 8;
  const int r = static_cast<int>(lane) / 4, col0 = (static_cast<int>(lane) % 4) * 4;
  const bool row_valid = row0 + r < nq;
  const int qpos = first_pos + row0 + r;

  // Q rows (scaled, zero past the sequence) into simdgroup matrices, 8 columns at a time.
  simdgroup_float8x8 qf[C];
  for (int c = 0; c < C; ++c) {
    for (int e = 0; e < 2; ++e) {
      const int idx = static_cast<int>(lane) * 2 + e, rr = idx / 8, cc = idx % 8;
      scratch[idx] = row0 + rr < nq
                         ? to_float(q[(static_cast<long>(q_start + row0 + rr) * p.num_heads + head) * D + c * 8 + cc]) *
                               p.scale
                         : 0.0f;
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);
    simdgroup_load(qf[c], scratch, 8);
    simdgroup_barrier(mem_flags::mem_threadgroup);
  }
  simdgroup_float8x8 of[C];
  for (int c = 0; c < C; ++c) of[c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  float m_row = -metal::numeric_limits<float>::infinity(), l_row = 0.0f;

  for (int kt = key_lo; kt < key_hi; kt += BK) {
    stage_rows<T, D>(kv, k_cache, table, kt, key_hi, kvh, p, p.k_stride_block, p.k_stride_token, p.k_stride_head,
                     tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // S = Q K^T, 8 x BK, into ps.
    for (int jb = 0; jb < BK / 8; ++jb) {
      simdgroup_float8x8 s = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
      for (int c = 0; c < C; ++c) {
        simdgroup_float8x8 kt_frag;
        simdgroup_load(kt_frag, kv + jb * 8 * D + c * 8, D, ulong2(0), true);
        simdgroup_multiply_accumulate(s, qf[c], kt_frag, s);
      }
      simdgroup_store(s, ps + jb * 8, BK);
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);

    // Online softmax of this lane's 4 logits; the 4 lanes of a row combine.
    float sv[4];
    float tile_max = -metal::numeric_limits<float>::infinity();
    for (int j = 0; j < 4; ++j) {
      const int pos = kt + col0 + j;
      const bool visible = row_valid && pos < key_hi && (!p.causal || pos <= qpos) &&
                           (p.sliding_window == 0 || qpos - pos < p.sliding_window);
      sv[j] = visible ? apply_softcap(ps[r * BK + col0 + j], p) : -metal::numeric_limits<float>::infinity();
      tile_max = max(tile_max, sv[j]);
    }
    tile_max = max(tile_max, simd_shuffle_xor(tile_max, 1));
    tile_max = max(tile_max, simd_shuffle_xor(tile_max, 2));
    const float m_new = max(m_row, tile_max);
    const bool any = m_new > -metal::numeric_limits<float>::infinity();
    const float alpha = any ? metal::exp(m_row - m_new) : 1.0f;
    float row_sum = 0.0f;
    for (int j = 0; j < 4; ++j) {
      const float pr = any && sv[j] > -metal::numeric_limits<float>::infinity() ? metal::exp(sv[j] - m_new) : 0.0f;
      ps[r * BK + col0 + j] = pr;
      row_sum += pr;
    }
    row_sum += simd_shuffle_xor(row_sum, 1);
    row_sum += simd_shuffle_xor(row_sum, 2);
    l_row = l_row * alpha + row_sum;
    m_row = m_new;
    // diag(alpha): each lane writes two entries of its row.
    for (int e = 0; e < 2; ++e) {
      const int cc = (static_cast<int>(lane) % 4) * 2 + e;
      scratch[r * 8 + cc] = cc == r ? alpha : 0.0f;
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);
    simdgroup_float8x8 diag;
    simdgroup_load(diag, scratch, 8);
    for (int c = 0; c < C; ++c) simdgroup_multiply(of[c], diag, of[c]);

    threadgroup_barrier(mem_flags::mem_threadgroup);  // all simdgroups are done with K
    stage_rows<T, D>(kv, v_cache, table, kt, key_hi, kvh, p, p.v_stride_block, p.v_stride_token, p.v_stride_head,
                     tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // O += P V
    for (int jb = 0; jb < BK / 8; ++jb) {
      simdgroup_float8x8 pf;
      simdgroup_load(pf, ps + jb * 8, BK);
      for (int c = 0; c < C; ++c) {
        simdgroup_float8x8 vf;
        simdgroup_load(vf, kv + jb * 8 * D + c * 8, D);
        simdgroup_multiply_accumulate(of[c], pf, vf, of[c]);
      }
    }
    // The next tile overwrites kv, ps and scratch.
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  // out = O / l; lane writes two entries of its own row of each 8x8 tile.
  const float inv = l_row > 0.0f ? 1.0f / l_row : 0.0f;
  for (int c = 0; c < C; ++c) {
    simdgroup_store(of[c], scratch, 8);
    simdgroup_barrier(mem_flags::mem_threadgroup);
    if (row_valid) {
      for (int e = 0; e < 2; ++e) {
        const int cc = (static_cast<int>(lane) % 4) * 2 + e;
        out[(static_cast<long>(q_start + row0 + r) * p.num_heads + head) * D + c * 8 + cc] =
            from_float<T>(scratch[r * 8 + cc] * inv);
      }
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);
  }
}

}  // namespace tf
