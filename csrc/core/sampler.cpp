#include "core/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace tinyfast::core {
namespace {

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void apply_penalties(float* x, const SamplingRow& p, const TokenHistory& h, int32_t vocab) {
  auto valid = [vocab](int32_t t) { return t >= 0 && t < vocab; };
  if (p.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen;
    seen.reserve(static_cast<size_t>(h.num_prompt + h.num_output));
    for (int64_t i = 0; i < h.num_prompt; ++i) seen.insert(h.prompt[i]);
    for (int64_t i = 0; i < h.num_output; ++i) seen.insert(h.output[i]);
    for (int32_t t : seen) {
      if (!valid(t)) continue;
      x[t] = x[t] > 0 ? x[t] / p.repetition_penalty : x[t] * p.repetition_penalty;
    }
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int32_t> counts;
    for (int64_t i = 0; i < h.num_output; ++i) ++counts[h.output[i]];
    for (const auto& [t, c] : counts) {
      if (!valid(t)) continue;
      x[t] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(c);
    }
  }
}

using Cand = std::pair<float, int32_t>;  // (logit, token)
inline bool better(const Cand& a, const Cand& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); }

int32_t sample_filtered(const float* x, int32_t vocab, const SamplingRow& p, Rng& rng) {
  std::vector<Cand> cand(vocab);
  const float inv_t = 1.0f / p.temperature;
  for (int32_t i = 0; i < vocab; ++i) cand[i] = {x[i] * inv_t, i};
  if (p.top_k > 0 && p.top_k < vocab) {
    std::nth_element(cand.begin(), cand.begin() + p.top_k, cand.end(), better);
    cand.resize(p.top_k);
  }
  float m = -std::numeric_limits<float>::infinity();
  for (const Cand& c : cand) m = std::max(m, c.first);
  if (!std::isfinite(m)) return greedy_token(x, vocab);  // every logit -inf or NaN: nothing to sample from
  if (p.min_p > 0.0f) {
    const float floor = m + std::log(p.min_p);
    cand.erase(std::remove_if(cand.begin(), cand.end(), [&](const Cand& c) { return c.first < floor; }), cand.end());
  }
  if (p.top_p < 1.0f) {
    double total = 0;
    for (const Cand& c : cand) total += std::exp(static_cast<double>(c.first - m));
    const double target = p.top_p * total;
    // Sort only as much of the head as the nucleus needs; it is usually small.
    size_t k = std::min<size_t>(cand.size(), 64);
    for (;;) {
      std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), better);
      double cum = 0;
      size_t cut = k;
      for (size_t i = 0; i < k; ++i) {
        cum += std::exp(static_cast<double>(cand[i].first - m));
        if (cum >= target) {
          cut = i + 1;
          break;
        }
      }
      if (cut < k || cum >= target || k == cand.size()) {
        cand.resize(cut);
        break;
      }
      k = std::min(cand.size(), k * 4);
    }
  }
  double total = 0;
  for (const Cand& c : cand) total += std::exp(static_cast<double>(c.first - m));
  double u = rng.uniform() * total;
  for (const Cand& c : cand) {
    u -= std::exp(static_cast<double>(c.first - m));
    if (u < 0) return c.second;
  }
  return cand.back().second;  // rounding left u just above zero
}

}  // namespace

// Same result as the scan `if (x[i] > x[best]) best = i` from best = 0, in two
// passes without its loop-carried dependency: the maximum over eight
// independent lanes (a NaN never replaces a lane's value), then the first id
// holding it (temperature-0 sampling of a 262144-entry row: 0.18 -> 0.12 ms).
int32_t greedy_token(const float* x, int32_t n) {
  if (n <= 0 || x[0] != x[0]) return 0;
  float lane[8];
  for (int l = 0; l < 8; ++l) lane[l] = x[0];
  int32_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
  float m = lane[0];
  for (int l = 1; l < 8; ++l) m = lane[l] > m ? lane[l] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  for (i = 0; i < n; ++i)
    if (x[i] == m) return i;
  return 0;  // unreachable: m is one of the values
}

void Rng::seed(uint64_t seed, uint64_t state[4]) {
  for (int i = 0; i < 4; ++i) state[i] = splitmix64(seed);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

SampleResult sample_row(const float* logits, int32_t vocab, const SamplingRow& params, const TokenHistory& history,
                        uint64_t rng_state[4], int32_t num_top_logprobs, std::vector<float>& scratch) {
  SampleResult r;
  // Raw log-softmax normaliser: logprobs describe the model, not the sampler.
  // A full pass of exp over the vocabulary, so only when logprobs are wanted.
  double lse = std::numeric_limits<double>::quiet_NaN();
  if (num_top_logprobs >= 0) {
    float m = -std::numeric_limits<float>::infinity();
    for (int32_t i = 0; i < vocab; ++i) m = std::max(m, logits[i]);
    double z = 0;
    for (int32_t i = 0; i < vocab; ++i) z += std::exp(static_cast<double>(logits[i] - m));
    lse = m + std::log(z);
  }

  scratch.assign(logits, logits + vocab);
  apply_penalties(scratch.data(), params, history, vocab);
  Rng rng{rng_state};
  r.token = params.temperature <= 0.0f ? greedy_token(scratch.data(), vocab)
                                       : sample_filtered(scratch.data(), vocab, params, rng);
  r.logprob = static_cast<float>(logits[r.token] - lse);
  if (num_top_logprobs > 0) {
    const int32_t n = std::min(num_top_logprobs, vocab);
    std::vector<Cand> cand(vocab);
    for (int32_t i = 0; i < vocab; ++i) cand[i] = {logits[i], i};
    std::partial_sort(cand.begin(), cand.begin() + n, cand.end(), better);
    for (int32_t i = 0; i < n; ++i) r.top.emplace_back(cand[i].second, static_cast<float>(cand[i].first - lse));
  }
  return r;
}

}  // namespace tinyfast::core
