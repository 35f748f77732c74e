// write_kv entry points (logic: kernels/write_kv.h).
#include "kernels/write_kv.h"

template <typename T>
[[kernel]] void write_kv(const device T* k [[buffer(0)]], const device T* v [[buffer(1)]],
                         device T* k_cache [[buffer(2)]], device T* v_cache [[buffer(3)]],
                         const device int* slot_mapping [[buffer(4)]],
                         constant tf::WriteKVParams& p [[buffer(5)]],
                         uint3 tgid [[threadgroup_position_in_grid]],
                         uint3 tid [[thread_position_in_threadgroup]],
                         uint3 tgsize [[threads_per_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]],
                         uint sg [[simdgroup_index_in_threadgroup]]) {
  tf::write_kv_impl<T>(k, v, k_cache, v_cache, slot_mapping, p, tgid.y, tgid.x * tgsize.x + tid.x);
}

TF_INSTANTIATE("tf_write_kv_float32", write_kv, float)
TF_INSTANTIATE("tf_write_kv_float16", write_kv, half)
TF_INSTANTIATE("tf_write_kv_bfloat16", write_kv, bfloat)
