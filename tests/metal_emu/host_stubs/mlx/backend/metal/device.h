// Stub of MLX's mlx/backend/metal/device.h with only the members csrc/metal
// uses, declared exactly as in the real header (the test checks each
// declaration against the installed MLX header), for a syntax-only check on
// Linux. Mirrors the API MLX's examples/extensions axpby eval_gpu uses.
#pragma once

#include <Metal/Metal.hpp>

#include <string>
#include <vector>

#include "mlx/array.h"
#include "mlx/device.h"
#include "mlx/stream.h"

namespace mlx::core::metal {

class CommandEncoder {
 public:
  void set_input_array(const array& a, int idx, int64_t offset = 0);
  void set_output_array(array& a, int idx, int64_t offset = 0);
  void add_temporary(array arr);
  void add_temporaries(std::vector<array> arrays);
  void dispatch_threadgroups(MTL::Size grid_dims, MTL::Size group_dims);
  void dispatch_threads(MTL::Size grid_dims, MTL::Size group_dims);
  void set_compute_pipeline_state(MTL::ComputePipelineState* kernel);
  template <typename T>
  void set_bytes(const T& v, int idx);
  void set_threadgroup_memory_length(size_t length, int idx);
};

class Device {
 public:
  MTL::Library* get_library(const std::string& name, const std::string& path = "");
  MTL::ComputePipelineState* get_kernel(const std::string& base_name, MTL::Library* mtl_lib, const std::string& hash_name = "");
};

Device& device(mlx::core::Device);
CommandEncoder& get_command_encoder(Stream s);

}  // namespace mlx::core::metal
