#include "metal/device.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <limits>
#include <mutex>
#include <stdexcept>

namespace tinyfast::metal {
namespace {

// tinyfast.metallib is installed next to the _C extension module (this code).
std::string metallib_path() {
  if (const char* env = std::getenv("TINYFAST_METALLIB")) return env;
  Dl_info info;
  if (dladdr(reinterpret_cast<const void*>(&metallib_path), &info) && info.dli_fname) {
    return (std::filesystem::path(info.dli_fname).parent_path() / "tinyfast.metallib").string();
  }
  return "tinyfast.metallib";
}

MTL::Library* library(mx::metal::Device& d) {
  static std::once_flag once;
  static std::string path;
  std::call_once(once, [] { path = metallib_path(); });
  if (!std::filesystem::exists(path))
    throw std::runtime_error("tinyfast: Metal kernels not found at " + path +
                             " (the wheel installs tinyfast.metallib next to the _C module; set TINYFAST_METALLIB "
                             "to override, or run on the CPU stream)");
  return d.get_library("tinyfast", path);
}

}  // namespace

MTL::ComputePipelineState* get_kernel(mx::metal::Device& d, const std::string& name) {
  return d.get_kernel(name, library(d));
}

std::string dtype_suffix(mx::Dtype t) {
  if (t == mx::float32) return "float32";
  if (t == mx::float16) return "float16";
  if (t == mx::bfloat16) return "bfloat16";
  throw std::invalid_argument("tinyfast Metal kernels take float32, float16 or bfloat16");
}

int checked_int(const char* op, const char* what, int64_t v) {
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    throw std::invalid_argument(std::string(op) + ": " + what + " = " + std::to_string(v) +
                                " does not fit the Metal kernels' int32 parameters");
  return static_cast<int>(v);
}

}  // namespace tinyfast::metal
