// The layer-op row kernels built with -mavx2 -mfma -mf16c (CMakeLists.txt);
// used only when kernel_level() reports avx2 or better.
#define TF_LAYER_NS avx2
#include "cpu/layer_ops_kernel.h"
