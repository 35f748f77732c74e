#pragma once
// Returning C++ buffers to Python as NumPy arrays without copies.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace tinyfast::bindings {

namespace nb = nanobind;

// Takes ownership of `v`; the array keeps it alive through a capsule.
template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T>&& v, std::initializer_list<size_t> shape = {}) {
  auto* owned = new std::vector<T>(std::move(v));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  static T empty_slot{};  // NumPy wants a non-null pointer even for empty arrays
  T* data = owned->empty() ? &empty_slot : owned->data();
  if (shape.size() == 0) return nb::ndarray<nb::numpy, T>(data, {owned->size()}, owner);
  return nb::ndarray<nb::numpy, T>(data, shape, owner);
}

// A read-only view into memory owned by a bound C++ object; pair with
// nb::rv_policy::reference_internal so the object outlives the view.
template <typename T>
nb::ndarray<nb::numpy, const T> view(const std::vector<T>& v, std::initializer_list<size_t> shape = {}) {
  static const T empty_slot{};
  const T* data = v.empty() ? &empty_slot : v.data();
  if (shape.size() == 0) return nb::ndarray<nb::numpy, const T>(data, {v.size()});
  return nb::ndarray<nb::numpy, const T>(data, shape);
}

}  // namespace tinyfast::bindings
