#pragma once
// Argument checks shared by the op functions: each throws with the op and
// argument name so the Python error says what to fix.
#include <initializer_list>
#include <stdexcept>
#include <string>

#include <mlx/array.h>

#include "cpu/paged_attention.h"
#include "ops/dense_inputs.h"
#include "ops/dtype_name.h"
#include "ops/paged_metadata.h"

namespace tinyfast::ops {

namespace mx = mlx::core;

inline std::string shape_str(const mx::array& a) {
  std::string s = "(";
  for (int i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline void check_ndim(const char* op, const char* name, const mx::array& a, int ndim, const char* layout) {
  if (a.ndim() != ndim)
    throw std::invalid_argument(std::string(op) + ": " + name + " must be " + std::to_string(ndim) + "-D " + layout +
                                ", got shape " + shape_str(a));
}

inline void check_same_shape(const char* op, const char* na, const mx::array& a, const char* nb, const mx::array& b) {
  if (a.shape() != b.shape())
    throw std::invalid_argument(std::string(op) + ": " + na + " " + shape_str(a) + " and " + nb + " " + shape_str(b) +
                                " must have the same shape");
}

inline void check_dtype(const char* op, const char* name, const mx::array& a, mx::Dtype want) {
  if (a.dtype() != want)
    throw DtypeError(std::string(op) + ": " + name + " must be " + dtype_str(want) + ", got " + dtype_str(a.dtype()));
}

inline void check_float_dtype(const char* op, const char* name, const mx::array& a) {
  if (a.dtype() != mx::float32 && a.dtype() != mx::float16 && a.dtype() != mx::bfloat16)
    throw DtypeError(std::string(op) + ": " + name + " must be float32, float16 or bfloat16, got " +
                     dtype_str(a.dtype()));
}

inline cpu::ElemType elem_type(mx::Dtype t) {
  if (t == mx::float16) return cpu::ElemType::f16;
  if (t == mx::bfloat16) return cpu::ElemType::bf16;
  return cpu::ElemType::f32;
}

}  // namespace tinyfast::ops
