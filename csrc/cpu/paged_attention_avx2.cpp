// The paged attention kernels built with -mavx2 -mfma -mf16c (CMakeLists.txt);
// used only when kernel_level() reports avx2 or better.
#define TF_ATTN_NS avx2
#include "cpu/paged_attention_kernel.h"
