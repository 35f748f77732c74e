// tinyfast._C attention ops: write_kv, paged_attention_decode, paged_attention_prefill.
// Python users call them through tinyfast.ops (python/tinyfast/ops/attention.py),
// which documents them and converts NumPy/list metadata.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/variant.h>

#include <mlx/array.h>

#include "ops/paged_attention.h"
#include "ops/paged_metadata.h"
#include "ops/write_kv.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tinyfast::bindings {

void bind_attention(nb::module_& m) {
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ops::DtypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.def(
      "write_kv",
      [](const mlx::core::array& k, const mlx::core::array& v, const mlx::core::array& k_cache,
         const mlx::core::array& v_cache, const mlx::core::array& slot_mapping) {
        return ops::write_kv(k, v, k_cache, v_cache, slot_mapping);
      },
      "k"_a, "v"_a, "k_cache"_a, "v_cache"_a, "slot_mapping"_a,
      "Scatters k/v [num_tokens, num_kv_heads, head_dim] into the pools at slot_mapping (int32,\n"
      "-1 = skip), in place; returns (k_cache_out, v_cache_out) sharing the pools' buffers.");
  m.def(
      "paged_attention_decode",
      [](const mlx::core::array& q, const mlx::core::array& k_cache, const mlx::core::array& v_cache,
         const mlx::core::array& block_tables, const mlx::core::array& context_lens, float scale,
         std::optional<int> sliding_window, std::optional<float> softcap) {
        return ops::paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale, sliding_window,
                                           softcap);
      },
      "q"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "context_lens"_a, "scale"_a,
      "sliding_window"_a = nb::none(), "softcap"_a = nb::none(),
      "Paged attention for one query per sequence (see tinyfast.ops.paged_attention_decode).");
  m.def(
      "paged_attention_prefill",
      [](const mlx::core::array& q, const mlx::core::array& k_cache, const mlx::core::array& v_cache,
         const mlx::core::array& block_tables, const mlx::core::array& query_start_loc,
         const mlx::core::array& context_lens, float scale, bool causal, std::optional<int> sliding_window,
         std::optional<float> softcap) {
        return ops::paged_attention_prefill(q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale,
                                            causal, sliding_window, softcap);
      },
      "q"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "query_start_loc"_a, "context_lens"_a, "scale"_a,
      "causal"_a = true, "sliding_window"_a = nb::none(), "softcap"_a = nb::none(),
      "Varlen paged attention (see tinyfast.ops.paged_attention_prefill).");
}

}  // namespace tinyfast::bindings
