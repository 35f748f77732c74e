#pragma once
// Token sampling for one row of logits: penalties, temperature, top-k, top-p,
// min-p, per-request seeded RNG, logprobs. Rows are independent, so a row's
// result never depends on the rest of the batch.
#include <cstdint>
#include <utility>
#include <vector>

namespace tinyfast::core {

struct SamplingRow {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // <= 0: whole vocabulary
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // on prompt and output tokens (HF semantics)
  float presence_penalty = 0.0f;    // on output tokens (OpenAI semantics)
  float frequency_penalty = 0.0f;   // on output tokens, per occurrence
};

struct TokenHistory {
  const int32_t* prompt = nullptr;
  int64_t num_prompt = 0;
  const int32_t* output = nullptr;
  int64_t num_output = 0;
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;  // of the sampled token under the raw model distribution
  std::vector<std::pair<int32_t, float>> top;  // most likely tokens, best first
};

// xoshiro256** (public-domain algorithm by Blackman and Vigna); the 4-word
// state lives with the request so seeded requests are reproducible.
struct Rng {
  uint64_t* s;
  static void seed(uint64_t seed, uint64_t state[4]);
  uint64_t next();
  double uniform();  // [0, 1)
};

// The greedy token of a row: the lowest id with the largest value; NaN entries
// are never chosen unless x[0] is NaN (then 0). The sampler's temperature-0 pick.
int32_t greedy_token(const float* x, int32_t n);

// `logits` is the raw row (read only); `scratch` is reused between calls.
// num_top_logprobs < 0: no logprobs at all (logprob is NaN); 0: the sampled
// token's only; n > 0: also the n most likely tokens.
SampleResult sample_row(const float* logits, int32_t vocab, const SamplingRow& params, const TokenHistory& history,
                        uint64_t rng_state[4], int32_t num_top_logprobs, std::vector<float>& scratch);

}  // namespace tinyfast::core
