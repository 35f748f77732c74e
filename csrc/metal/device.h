#pragma once
// Metal host side shared by the ops (Apple only: compiled when MLX is built
// with Metal, see CMakeLists.txt). Kernels live in tinyfast.metallib, built
// from metal/*.metal; their names and buffer indices are fixed by
// metal/kernels/params.h and the TF_INSTANTIATE tables of the .metal files.
#include <string>

#include <mlx/array.h>
#include <mlx/backend/metal/device.h>

namespace tinyfast::metal {

namespace mx = mlx::core;

// The compute pipeline of entry point `name`. tinyfast.metallib is loaded on
// first use (next to the _C module, or from $TINYFAST_METALLIB) and kept by
// MLX's device under the library name "tinyfast"; MLX also caches the
// pipelines per library, so repeated lookups are map hits.
MTL::ComputePipelineState* get_kernel(mx::metal::Device& d, const std::string& name);

// "float32" / "float16" / "bfloat16": the dtype part of the kernel names.
std::string dtype_suffix(mx::Dtype t);

// Kernel parameters are int32; larger strides or sizes are refused.
int checked_int(const char* op, const char* what, int64_t v);

}  // namespace tinyfast::metal
