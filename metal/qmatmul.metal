// Quantized mat-vec entry points for the GGUF formats (logic: kernels/qmatmul.h).
// MLX affine formats run as mx.quantized_matmul on the GPU (csrc/ops/qmatmul.cpp).
#include "kernels/qmatmul.h"

template <typename T, int Fmt>
[[kernel]] void qmatmul(const device T* x [[buffer(0)]], const device uchar* w [[buffer(1)]],
                        device T* y [[buffer(2)]], constant tf::QMatvecParams& p [[buffer(3)]],
                        uint3 tgid [[threadgroup_position_in_grid]], uint3 tid [[thread_position_in_threadgroup]],
                        uint3 tgsize [[threads_per_threadgroup]], uint lane [[thread_index_in_simdgroup]],
                        uint sg [[simdgroup_index_in_threadgroup]]) {
  tf::qmatmul_impl<T, Fmt>(x, w, y, p, tgid, lane, sg);
}

#define TF_QMATMUL(fname, F)                                            \
  TF_INSTANTIATE("tf_qmatmul_" fname "_float32", qmatmul, float, F)     \
  TF_INSTANTIATE("tf_qmatmul_" fname "_float16", qmatmul, half, F)      \
  TF_INSTANTIATE("tf_qmatmul_" fname "_bfloat16", qmatmul, bfloat, F)

TF_QMATMUL("q4_0", tf::kQ4_0)
TF_QMATMUL("q5_0", tf::kQ5_0)
TF_QMATMUL("q8_0", tf::kQ8_0)
TF_QMATMUL("q4_k", tf::kQ4_K)
TF_QMATMUL("q6_k", tf::kQ6_K)
