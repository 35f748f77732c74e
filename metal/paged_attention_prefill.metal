// Prefill attention entry points (logic: kernels/paged_attention_prefill.h).
#include "kernels/paged_attention_prefill.h"

template <typename T, int D>
[[kernel]] void paged_attention_prefill(
    const device T* q [[buffer(0)]], const device T* k_cache [[buffer(1)]], const device T* v_cache [[buffer(2)]],
    const device int* block_tables [[buffer(3)]], const device int* query_start_loc [[buffer(4)]],
    const device int* context_lens [[buffer(5)]], device T* out [[buffer(6)]],
    constant tf::PagedAttentionParams& p [[buffer(7)]], threadgroup float* smem TF_THREADGROUP_BUFFER(0),
    uint3 tgid [[threadgroup_position_in_grid]], uint3 tid [[thread_position_in_threadgroup]],
    uint3 tgsize [[threads_per_threadgroup]], uint lane [[thread_index_in_simdgroup]],
    uint sg [[simdgroup_index_in_threadgroup]]) {
  tf::paged_attention_prefill_impl<T, D>(q, k_cache, v_cache, block_tables, query_start_loc, context_lens, out, p,
                                         smem, tgid, tid.x, lane, sg);
}

#define TF_PREFILL(tname, T)                                                                 \
  TF_INSTANTIATE("tf_paged_attention_prefill_" tname "_d64", paged_attention_prefill, T, 64)   \
  TF_INSTANTIATE("tf_paged_attention_prefill_" tname "_d128", paged_attention_prefill, T, 128) \
  TF_INSTANTIATE("tf_paged_attention_prefill_" tname "_d256", paged_attention_prefill, T, 256)

TF_PREFILL("float32", float)
TF_PREFILL("float16", half)
TF_PREFILL("bfloat16", bfloat)
