// Decode attention entry points (logic: kernels/paged_attention_decode.h).
#include "kernels/paged_attention_decode.h"

template <typename T, int D>
[[kernel]] void paged_attention_decode(
    const device T* q [[buffer(0)]], const device T* k_cache [[buffer(1)]], const device T* v_cache [[buffer(2)]],
    const device int* block_tables [[buffer(3)]], const device int* context_lens [[buffer(4)]],
    device T* out [[buffer(5)]], constant tf::PagedAttentionParams& p [[buffer(6)]],
    threadgroup float* smem TF_THREADGROUP_BUFFER(0), uint3 tgid [[threadgroup_position_in_grid]],
    uint3 tid [[thread_position_in_threadgroup]], uint3 tgsize [[threads_per_threadgroup]],
    uint lane [[thread_index_in_simdgroup]], uint sg [[simdgroup_index_in_threadgroup]]) {
  tf::paged_attention_decode_impl<T, D>(q, k_cache, v_cache, block_tables, context_lens, out, p, smem, tgid, lane);
}

template <typename T, int D>
[[kernel]] void paged_attention_decode_split(
    const device T* q [[buffer(0)]], const device T* k_cache [[buffer(1)]], const device T* v_cache [[buffer(2)]],
    const device int* block_tables [[buffer(3)]], const device int* context_lens [[buffer(4)]],
    device float* part_acc [[buffer(5)]], device float* part_max [[buffer(6)]],
    device float* part_sum [[buffer(7)]], constant tf::PagedAttentionParams& p [[buffer(8)]],
    threadgroup float* smem TF_THREADGROUP_BUFFER(0), uint3 tgid [[threadgroup_position_in_grid]],
    uint3 tid [[thread_position_in_threadgroup]], uint3 tgsize [[threads_per_threadgroup]],
    uint lane [[thread_index_in_simdgroup]], uint sg [[simdgroup_index_in_threadgroup]]) {
  tf::paged_attention_decode_split_impl<T, D>(q, k_cache, v_cache, block_tables, context_lens, part_acc, part_max,
                                              part_sum, p, smem, tgid, lane);
}

template <typename T, int D>
[[kernel]] void paged_attention_decode_reduce(
    const device float* part_acc [[buffer(0)]], const device float* part_max [[buffer(1)]],
    const device float* part_sum [[buffer(2)]], device T* out [[buffer(3)]],
    constant tf::PagedAttentionParams& p [[buffer(4)]], uint3 tgid [[threadgroup_position_in_grid]],
    uint3 tid [[thread_position_in_threadgroup]], uint3 tgsize [[threads_per_threadgroup]],
    uint lane [[thread_index_in_simdgroup]], uint sg [[simdgroup_index_in_threadgroup]]) {
  tf::paged_attention_decode_reduce_impl<T, D>(part_acc, part_max, part_sum, out, p, tgid, lane);
}

#define TF_DECODE(tname, T, D)                                                                           \
  TF_INSTANTIATE("tf_paged_attention_decode_" tname "_d" #D, paged_attention_decode, T, D)               \
  TF_INSTANTIATE("tf_paged_attention_decode_split_" tname "_d" #D, paged_attention_decode_split, T, D)   \
  TF_INSTANTIATE("tf_paged_attention_decode_reduce_" tname "_d" #D, paged_attention_decode_reduce, T, D)

#define TF_DECODE_DTYPES(D)      \
  TF_DECODE("float32", float, D) \
  TF_DECODE("float16", half, D)  \
  TF_DECODE("bfloat16", bfloat, D)

TF_DECODE_DTYPES(64)
TF_DECODE_DTYPES(128)
TF_DECODE_DTYPES(256)
