#pragma once
// Dtype names for error messages, spelled as NumPy/MLX users know them.
#include <string>

#include <mlx/dtype.h>

namespace tinyfast::ops {

inline std::string dtype_str(mlx::core::Dtype t) {
  namespace mx = mlx::core;
  if (t == mx::float32) return "float32";
  if (t == mx::float16) return "float16";
  if (t == mx::bfloat16) return "bfloat16";
  if (t == mx::float64) return "float64";
  if (t == mx::uint8) return "uint8";
  if (t == mx::uint32) return "uint32";
  if (t == mx::int8) return "int8";
  if (t == mx::int32) return "int32";
  if (t == mx::int64) return "int64";
  if (t == mx::bool_) return "bool";
  return "dtype " + std::to_string(static_cast<int>(t.val()));
}

}  // namespace tinyfast::ops
