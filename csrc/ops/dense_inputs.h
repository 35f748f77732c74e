#pragma once
// How the ops hand their inputs to the kernels, which read them as dense rows.
#include <cstring>
#include <initializer_list>
#include <vector>

#include <mlx/allocator.h>
#include <mlx/array.h>
#include <mlx/backend/cpu/encoder.h>
#include <mlx/ops.h>

namespace tinyfast::ops {

namespace mx = mlx::core;

// Inputs the kernels read as dense rows. On the CPU they enter the graph as they
// are and eval_cpu densifies them (dense_inputs): a Contiguous node per input
// doubled a decode step's graph (~600 extra nodes, each a scheduling round
// trip, although our ops' outputs and their reshapes are already dense). The
// Metal kernels get Contiguous nodes as before.
inline mx::array graph_input(const mx::array& a, mx::Stream s) {
  return s.device == mx::Device::gpu ? mx::contiguous(a, false, s) : a;
}

// Element-by-element copy of a strided view (any strides, also 0 and negative)
// into dense row-major order.
inline void copy_strided(const char* src, char* dst, const mx::Shape& shape, const mx::Strides& strides,
                         size_t item) {
  const size_t nd = shape.size();
  int64_t n = 1;
  for (int d : shape) n *= d;
  std::vector<int64_t> idx(nd, 0);
  int64_t off = 0;  // in elements
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + i * item, src + off * static_cast<int64_t>(item), item);
    for (size_t d = nd; d-- > 0;) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// `inputs` with those at positions `dense` made row-contiguous: an input that
// is not (a transposed, strided or broadcast view) is copied by a task queued
// before the op's own, into a buffer the encoder keeps until the tasks ran.
inline std::vector<mx::array> dense_inputs(const std::vector<mx::array>& inputs, std::initializer_list<size_t> dense,
                                           mx::Stream s) {
  std::vector<mx::array> out = inputs;
  auto& enc = mx::cpu::get_command_encoder(s);
  for (size_t i : dense) {
    const mx::array& src = inputs[i];
    if (src.flags().row_contiguous) continue;
    mx::array dst(src.shape(), src.dtype(), nullptr, {});
    dst.set_data(mx::allocator::malloc(dst.nbytes()));
    enc.set_input_array(src);
    enc.dispatch([src, d = dst.data<char>()] {
      copy_strided(src.data<char>(), d, src.shape(), src.strides(), src.itemsize());
    });
    enc.add_temporary(dst);
    out[i] = dst;
  }
  return out;
}

}  // namespace tinyfast::ops
