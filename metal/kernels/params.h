// Kernel parameter structs and buffer indices: the interface between the host
// code (csrc/metal) and the kernels (metal/*.metal), and what the emulator
// tests pack. Plain int/float fields only, so the layout is the same in C++
// and the Metal Shading Language.
#pragma once

// Program-scope constants live in Metal's constant address space.
#ifdef __METAL_VERSION__
#define TF_CONSTEXPR constant constexpr
#else
#define TF_CONSTEXPR constexpr
#endif

namespace tf {

TF_CONSTEXPR int kSimd = 32;  // lanes per simdgroup (all Apple GPUs)

// ---- write_kv ------------------------------------------------------------------
// buffers: 0 k, 1 v, 2 k_cache, 3 v_cache, 4 slot_mapping, 5 params
struct WriteKVParams {
  int num_tokens;
  int row_elems;  // num_kv_heads * head_dim
  int num_slots;  // num_blocks * block_size
};
TF_CONSTEXPR int kWriteKVThreads = 256;  // threads per threadgroup; grid (ceil(row_elems/256), num_tokens)

// ---- paged attention -----------------------------------------------------------
// Pools are [num_blocks, block_size, num_kv_heads, head_dim] with a contiguous
// head_dim; strides (in elements) of the first three axes are passed.
struct PagedAttentionParams {
  int num_seqs;
  int num_tokens;
  int num_heads;
  int num_kv_heads;
  int block_size;
  int max_blocks;      // block_tables row length
  int num_blocks;      // pool size (table entries outside it are never read)
  int k_stride_block, k_stride_token, k_stride_head;
  int v_stride_block, v_stride_token, v_stride_head;
  float scale;
  float softcap;       // 0: none
  int sliding_window;  // 0: none
  int causal;          // prefill only; decode is causal
  int partition_size;  // decode split-K: keys per partition (multiple of 32); 0: no split
  int num_partitions;  // decode split-K: partitions per sequence
  int heads_per_group; // decode: query heads one simdgroup handles (<= kDecodeMaxHeads)
};

// Decode: one simdgroup (a threadgroup of 32 threads) per (sequence, kv head,
// chunk of at most kDecodeMaxHeads of its query heads[, partition]).
// grid: (num_kv_heads * chunks, num_seqs, num_partitions or 1)
// decode buffers: 0 q, 1 k_cache, 2 v_cache, 3 block_tables, 4 context_lens, 5 out, 6 params
// split buffers:  0 q, 1 k_cache, 2 v_cache, 3 block_tables, 4 context_lens,
//                 5 partial acc float [parts, seqs, heads, D], 6 partial max float
//                 [parts, seqs, heads], 7 partial sum (same shape), 8 params
// reduce (one simdgroup per (head, sequence)): 0 partial acc, 1 partial max,
//                 2 partial sum, 3 out, 4 params
TF_CONSTEXPR int kDecodeMaxHeads = 8;
// Threadgroup memory of decode / split (floats): scaled q rows
// [kDecodeMaxHeads][head_dim], then probabilities [kDecodeMaxHeads][32].
constexpr int decode_threadgroup_floats(int head_dim) { return kDecodeMaxHeads * (head_dim + kSimd); }

// Prefill: kPrefillSimdgroups simdgroups, each 8 query rows of one head; a
// threadgroup per (head, query tile). Tiles of kPrefillRows queries are
// numbered over all sequences in order; since the host does not read
// query_start_loc, it launches prefill_max_tiles() of them (an upper bound)
// and the surplus ones exit at once.
// grid: (num_heads, prefill_max_tiles(num_tokens, num_seqs), 1)
// buffers: 0 q, 1 k_cache, 2 v_cache, 3 block_tables, 4 query_start_loc,
//          5 context_lens, 6 out, 7 params
TF_CONSTEXPR int kPrefillSimdgroups = 4;
TF_CONSTEXPR int kPrefillRows = 8 * kPrefillSimdgroups;
TF_CONSTEXPR int kPrefillKeys = 16;  // keys per tile
// sum over sequences of ceil(n_s / rows) <= num_tokens / rows + (non-empty sequences).
constexpr int prefill_max_tiles(int num_tokens, int num_seqs) {
  return (num_tokens + kPrefillRows - 1) / kPrefillRows + (num_seqs < num_tokens ? num_seqs : num_tokens);
}
// Per simdgroup: P [8][kPrefillKeys] and an 8x8 scratch tile.
TF_CONSTEXPR int kPrefillScratch = 8 * kPrefillKeys + 64;
// Threadgroup memory of prefill (floats): the K/V tile [kPrefillKeys][head_dim]
// and the simdgroups' scratch.
constexpr int prefill_threadgroup_floats(int head_dim) {
  return kPrefillKeys * head_dim + kPrefillSimdgroups * kPrefillScratch;
}

// ---- quantized matvec (GGUF formats) -------------------------------------------
// Format ids of the instantiations (the byte layouts: csrc/core/quant_blocks.h).
enum QFormat : int { kQ4_0 = 0, kQ5_0 = 1, kQ8_0 = 2, kQ4_K = 3, kQ6_K = 4 };
// y[m, n] = sum_k x[m, k] W[n, k]; W rows of GGUF blocks.
// buffers: 0 x [M, K], 1 W bytes [N, row_bytes], 2 y [M, N], 3 params
struct QMatvecParams {
  int m;
  int n;
  int k;
  int row_bytes;
};
TF_CONSTEXPR int kQMatvecSimdgroups = 2;  // per threadgroup
TF_CONSTEXPR int kQMatvecRows = 2;        // output rows per simdgroup
// grid: (ceil(n / (kQMatvecSimdgroups * kQMatvecRows)), m)

}  // namespace tf
