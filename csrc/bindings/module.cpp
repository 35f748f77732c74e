// tinyfast._C: the native half of tinyfast, one bind_* function per area.
#include <nanobind/nanobind.h>

#include <mlx/array.h>

namespace nb = nanobind;

namespace tinyfast::bindings {
void bind_core(nb::module_& m);
void bind_cpu(nb::module_& m);
void bind_sampler(nb::module_& m);
void bind_gguf(nb::module_& m);
void bind_quant(nb::module_& m);
void bind_attention(nb::module_& m);
void bind_layers(nb::module_& m);
void bind_tokenizer(nb::module_& m);
}  // namespace tinyfast::bindings

NB_MODULE(_C, m) {
  m.doc() = "tinyfast native core: block manager, scheduler, CPU kernels";
  tinyfast::bindings::bind_core(m);
  tinyfast::bindings::bind_cpu(m);
  tinyfast::bindings::bind_sampler(m);
  tinyfast::bindings::bind_gguf(m);
  tinyfast::bindings::bind_quant(m);
  tinyfast::bindings::bind_attention(m);
  tinyfast::bindings::bind_layers(m);
  tinyfast::bindings::bind_tokenizer(m);
  // Import-time probe that this module and mlx.core share nanobind's type
  // universe; without it every op taking an mx.array fails with an opaque
  // "incompatible function arguments".
  m.def(
      "_mlx_array_ndim", [](const mlx::core::array& a) { return a.ndim(); }, nb::arg("a"),
      "Number of dimensions of an mx.array (checks MLX interop).");
  // The engine's decode lookahead asks whether a step queued with mx.async_eval
  // has finished, without waiting (MLX's Python API has no such query).
  m.def(
      "array_ready", [](const mlx::core::array& a) { return a.is_available(); }, nb::arg("a"),
      "Whether `a` holds its values now: evaluated, or queued by mx.async_eval and finished.\n"
      "Never waits; False for an array no evaluation has been asked for.");
}
