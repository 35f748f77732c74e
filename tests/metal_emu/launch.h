// Launcher table of the emulator: every entry point instantiated with
// TF_INSTANTIATE registers itself here under its Metal host name, with a
// binder that passes buffer arguments by position (the [[buffer(i)]] order)
// and the thread-position attributes from the runtime.
//
// Entry-point convention (metal/*.metal): buffers and `constant` structs
// first, in buffer-index order, optionally one `threadgroup` pointer, then
//   uint3 [[threadgroup_position_in_grid]], uint3 [[thread_position_in_threadgroup]],
//   uint3 [[threads_per_threadgroup]], uint [[thread_index_in_simdgroup]],
//   uint [[simdgroup_index_in_threadgroup]].
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime.h"

namespace tfemu {

struct KernelEntry {
  std::function<void(void* const* args, const LaneIds&)> invoke;
  int num_args;  // parameters before the five thread-position attributes
};

std::map<std::string, KernelEntry>& registry();

template <typename A>
A bind_arg(void* p) {
  if constexpr (std::is_reference_v<A>) {
    return *static_cast<std::remove_reference_t<A>*>(p);
  } else {
    static_assert(std::is_pointer_v<A>, "entry-point arguments are pointers or constant references");
    return static_cast<A>(p);
  }
}

template <typename V>
V bind_dim(const Dim3& d) {
  V v;
  v.x = d.x;
  v.y = d.y;
  v.z = d.z;
  return v;
}

template <typename... P, size_t... I>
void call_entry(void (*f)(P...), void* const* args, const LaneIds& ids, std::index_sequence<I...>) {
  using Params = std::tuple<P...>;
  constexpr size_t n = sizeof...(I);
  f(bind_arg<std::tuple_element_t<I, Params>>(args[I])..., bind_dim<std::tuple_element_t<n, Params>>(ids.tgid),
    bind_dim<std::tuple_element_t<n + 1, Params>>(ids.tid), bind_dim<std::tuple_element_t<n + 2, Params>>(ids.tgsize),
    ids.lane, ids.simdgroup);
}

struct Registrar {
  template <typename... P>
  Registrar(const char* name, void (*f)(P...)) {
    constexpr size_t n = sizeof...(P);
    static_assert(n >= 5, "entry point lacks the thread-position attributes");
    registry()[name] = KernelEntry{
        [f](void* const* args, const LaneIds& ids) { call_entry(f, args, ids, std::make_index_sequence<n - 5>{}); },
        static_cast<int>(n - 5)};
  }
};

}  // namespace tfemu
