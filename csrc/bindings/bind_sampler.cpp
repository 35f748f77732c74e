// tinyfast._C.sample: one call per engine step, rows in parallel.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/numpy_out.h"
#include "core/sampler.h"
#include "cpu/thread_pool.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tinyfast::bindings {
namespace {

template <typename T>
using Vec1D = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Logits = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using RngStates = nb::ndarray<uint64_t, nb::shape<-1, 4>, nb::c_contig, nb::device::cpu>;

nb::tuple sample(Logits logits, Vec1D<float> temperature, Vec1D<int32_t> top_k, Vec1D<float> top_p,
                 Vec1D<float> min_p, Vec1D<float> repetition_penalty, Vec1D<float> presence_penalty,
                 Vec1D<float> frequency_penalty, RngStates rng_states, nb::list prompt_tokens,
                 nb::list output_tokens, int32_t num_logprobs) {
  const size_t rows = logits.shape(0);
  const int64_t vocab = static_cast<int64_t>(logits.shape(1));
  if (vocab <= 0 && rows > 0) throw std::invalid_argument("sample: logits have an empty vocabulary");
  if (vocab > INT32_MAX) throw std::invalid_argument("sample: vocabulary larger than 2^31");
  for (size_t n : {temperature.shape(0), top_k.shape(0), top_p.shape(0), min_p.shape(0),
                   repetition_penalty.shape(0), presence_penalty.shape(0), frequency_penalty.shape(0),
                   rng_states.shape(0), nb::len(prompt_tokens), nb::len(output_tokens)})
    if (n != rows)
      throw std::invalid_argument("sample: every per-row argument needs " + std::to_string(rows) + " rows, one has " +
                                  std::to_string(n));
  if (num_logprobs > 1024) throw std::invalid_argument("sample: at most 1024 top logprobs");

  std::vector<core::SamplingRow> params(rows);
  std::vector<core::TokenHistory> histories(rows);
  std::vector<Vec1D<int32_t>> keep_alive;  // arrays stay referenced while the GIL is released
  keep_alive.reserve(2 * rows);
  for (size_t i = 0; i < rows; ++i) {
    params[i] = {temperature(i), top_k(i), top_p(i), min_p(i), repetition_penalty(i), presence_penalty(i),
                 frequency_penalty(i)};
    keep_alive.push_back(nb::cast<Vec1D<int32_t>>(prompt_tokens[i]));
    keep_alive.push_back(nb::cast<Vec1D<int32_t>>(output_tokens[i]));
    const auto& p = keep_alive[keep_alive.size() - 2];
    const auto& o = keep_alive.back();
    histories[i] = {p.data(), static_cast<int64_t>(p.shape(0)), o.data(), static_cast<int64_t>(o.shape(0))};
  }

  const int32_t top_n = std::max<int32_t>(num_logprobs, 0);
  std::vector<int32_t> tokens(rows);
  std::vector<float> logprobs(rows);
  std::vector<int32_t> top_ids(rows * top_n, -1);
  std::vector<float> top_logprobs(rows * top_n, 0.0f);
  const float* data = logits.data();
  uint64_t* states = rng_states.data();
  {
    nb::gil_scoped_release release;
    cpu::ThreadPool::global().parallel_for(static_cast<int64_t>(rows), [&](int64_t begin, int64_t end) {
      std::vector<float> scratch;
      for (int64_t i = begin; i < end; ++i) {
        core::SampleResult r = core::sample_row(data + i * vocab, static_cast<int32_t>(vocab), params[i],
                                                histories[i], states + 4 * i, num_logprobs, scratch);
        tokens[i] = r.token;
        logprobs[i] = r.logprob;
        for (size_t j = 0; j < r.top.size(); ++j) {
          top_ids[i * top_n + j] = r.top[j].first;
          top_logprobs[i * top_n + j] = r.top[j].second;
        }
      }
    });
  }
  return nb::make_tuple(to_numpy(std::move(tokens)), to_numpy(std::move(logprobs)),
                        to_numpy(std::move(top_ids), {rows, static_cast<size_t>(top_n)}),
                        to_numpy(std::move(top_logprobs), {rows, static_cast<size_t>(top_n)}));
}

auto greedy_tokens(Logits logits) {
  const size_t rows = logits.shape(0);
  const int64_t vocab = static_cast<int64_t>(logits.shape(1));
  if (vocab <= 0 && rows > 0) throw std::invalid_argument("greedy_tokens: logits have an empty vocabulary");
  if (vocab > INT32_MAX) throw std::invalid_argument("greedy_tokens: vocabulary larger than 2^31");
  std::vector<int32_t> tokens(rows);
  const float* data = logits.data();
  {
    nb::gil_scoped_release release;
    for (size_t i = 0; i < rows; ++i) tokens[i] = core::greedy_token(data + i * vocab, static_cast<int32_t>(vocab));
  }
  return to_numpy(std::move(tokens));
}

}  // namespace

void bind_sampler(nb::module_& m) {
  m.def("greedy_tokens", &greedy_tokens, "logits"_a,
        "The temperature-0 token of each row of float32 logits [K, V] (what `sample` picks at\n"
        "temperature 0 without penalties): lowest id of the maximum, NaN never chosen unless first.");
  m.def("sample", &sample, "logits"_a, "temperature"_a, "top_k"_a, "top_p"_a, "min_p"_a, "repetition_penalty"_a,
        "presence_penalty"_a, "frequency_penalty"_a, "rng_states"_a, "prompt_tokens"_a, "output_tokens"_a,
        "num_logprobs"_a = -1,
        "Samples one token per row of float32 logits [K, V] with per-row parameters; rng_states [K, 4]\n"
        "uint64 are advanced in place. num_logprobs: -1 none, 0 sampled token only, n also the top n.\n"
        "Returns (tokens int32[K], logprobs float32[K], top_ids int32[K, n], top_logprobs float32[K, n]).");
  m.def("seed_rng_state", [](uint64_t seed) {
    std::vector<uint64_t> state(4);
    core::Rng::seed(seed, state.data());
    return to_numpy(std::move(state));
  }, "seed"_a, "A fresh xoshiro256** state [4] uint64 for a request seed.");
}

}  // namespace tinyfast::bindings
