// tinyfast._C per-token layer ops: rms_norm, rope, gated_act (Python: tinyfast.ops.layers).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <mlx/array.h>

#include "ops/layer_ops.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tinyfast::bindings {

void bind_layers(nb::module_& m) {
  using mlx::core::array;
  m.def("rms_norm", [](const array& x, const array& w, float eps) { return ops::rms_norm(x, w, eps); }, "x"_a,
        "weight"_a, "eps"_a, "x * rsqrt(mean(x^2, -1) + eps) * weight, in float32 (see tinyfast.ops.rms_norm).");
  m.def("rope",
        [](const array& x, const array& positions, const array& inv_freq, int rotary_dims, bool traditional,
           float scale) { return ops::rope(x, positions, inv_freq, rotary_dims, traditional, scale); },
        "x"_a, "positions"_a, "inv_freq"_a, "rotary_dims"_a, "traditional"_a, "scale"_a,
        "Rotary embedding at per-token positions (see tinyfast.ops.rope).");
  m.def("gated_act", [](const array& g, const array& u, const std::string& act) { return ops::gated_act(g, u, act); },
        "gate"_a, "up"_a, "act"_a, "act(gate) * up (see tinyfast.ops.gated_act).");
}

}  // namespace tinyfast::bindings
