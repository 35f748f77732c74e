// Paged attention (csrc/cpu/paged_attention.cpp, MLX-free) against a float64
// reference, for the cross build: the baseline kernel is written with GCC
// vector extensions, so on arm64 it is NEON code no test ran before.
// Inputs come from a fixed integer generator, so every build sees the same
// bits; the printed hash of all outputs lets test_neon_qmatmul.py compare the
// arm64 build with the x86-64 baseline build bit for bit (same source, no
// FMA contraction, the kernel's own exp).
// Usage: attention_check   prints one line per case and "hash=<hex>", exit 1 on a failure
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/quant_blocks.h"
#include "cpu/paged_attention.h"

using namespace tinyfast;
using namespace tinyfast::cpu;

namespace {

uint64_t state = 0x9e3779b97f4a7c15ull;
uint64_t next_u64() {  // splitmix64
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
float next_value(float amp) { return amp * static_cast<float>(static_cast<int>(next_u64() % 2001) - 1000) / 1000.0f; }

uint16_t to_bf16(float f) {  // round to nearest even (finite inputs only)
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// A tensor stored as `type`, plus the float values the kernel will read.
struct Tensor {
  ElemType type;
  std::vector<uint8_t> bytes;
  std::vector<float> value;
  Tensor(ElemType t, size_t n, float amp) : type(t), bytes(n * elem_size(t)), value(n) {
    for (size_t i = 0; i < n; ++i) set(i, next_value(amp));
  }
  void set(size_t i, float v) {
    if (type == ElemType::f32) {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = type == ElemType::f16 ? quant::fp32_to_fp16(v) : to_bf16(v);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
      v = type == ElemType::f16 ? quant::fp16_to_fp32(h) : from_bf16(h);
    }
    value[i] = v;
  }
  float read(size_t i) const {
    if (type == ElemType::f32) {
      float v;
      std::memcpy(&v, bytes.data() + 4 * i, 4);
      return v;
    }
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    return type == ElemType::f16 ? quant::fp16_to_fp32(h) : from_bf16(h);
  }
};

struct Case {
  const char* name;
  ElemType type;
  int heads, kv_heads, head_dim, block_size;
  std::vector<int> context, queries;  // queries empty: decode
  bool causal = true;
  int window = 0;
  float softcap = 0.0f;
};

uint64_t hash = 1469598103934665603ull;  // of the per-case hashes
int failures = 0;

void run_case(const Case& c) {
  const int seqs = static_cast<int>(c.context.size());
  const bool decode = c.queries.empty();
  std::vector<int32_t> qsl(1, 0);
  for (int s = 0; s < seqs; ++s) qsl.push_back(qsl.back() + (decode ? 1 : c.queries[s]));
  const int tokens = qsl.back();
  int max_blocks = 0, num_blocks = 0;
  for (int n : c.context) max_blocks = std::max(max_blocks, (n + c.block_size - 1) / c.block_size);
  num_blocks = seqs * max_blocks + 3;
  // block table: sequence s, block j -> a scattered pool block
  std::vector<int32_t> table(static_cast<size_t>(seqs * max_blocks), -1);
  for (int s = 0; s < seqs; ++s) {
    for (int j = 0; j < (c.context[s] + c.block_size - 1) / c.block_size; ++j) {
      table[s * max_blocks + j] = (j * seqs + s) * 7 % num_blocks;  // may be shared (as with prefix caching)
    }
  }
  const int hd = c.head_dim, vpad = hd + 4;  // V rows padded: strides are honoured
  Tensor q(c.type, static_cast<size_t>(tokens) * c.heads * hd, 1.0f);
  Tensor kc(c.type, static_cast<size_t>(num_blocks) * c.block_size * c.kv_heads * hd, 1.0f);
  Tensor vc(c.type, static_cast<size_t>(num_blocks) * c.block_size * c.kv_heads * vpad, 1.0f);
  Tensor out(c.type, static_cast<size_t>(tokens) * c.heads * hd, 0.0f);

  PagedAttentionArgs a;
  a.dtype = c.type;
  a.q = q.bytes.data();
  a.out = out.bytes.data();
  a.k_cache = kc.bytes.data();
  a.v_cache = vc.bytes.data();
  const int64_t ks[3] = {int64_t{c.block_size} * c.kv_heads * hd, int64_t{c.kv_heads} * hd, hd};
  const int64_t vs[3] = {int64_t{c.block_size} * c.kv_heads * vpad, int64_t{c.kv_heads} * vpad, vpad};
  std::memcpy(a.k_strides, ks, sizeof ks);
  std::memcpy(a.v_strides, vs, sizeof vs);
  a.block_tables = table.data();
  a.query_start_loc = decode ? nullptr : qsl.data();
  std::vector<int32_t> ctx(c.context.begin(), c.context.end());
  a.context_lens = ctx.data();
  a.num_seqs = seqs;
  a.num_tokens = tokens;
  a.num_heads = c.heads;
  a.num_kv_heads = c.kv_heads;
  a.head_dim = hd;
  a.num_blocks = num_blocks;
  a.block_size = c.block_size;
  a.max_blocks = max_blocks;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  a.softcap = c.softcap;
  a.sliding_window = c.window;
  a.causal = c.causal;
  paged_attention(a);

  double worst = 0.0;
  const double rel = c.type == ElemType::f32 ? 0.0 : c.type == ElemType::f16 ? 0x1p-11 : 0x1p-8;
  for (int s = 0; s < seqs; ++s) {
    const int n_ctx = c.context[s], nq = qsl[s + 1] - qsl[s];
    for (int j = 0; j < nq; ++j) {
      const int t = qsl[s] + j, pos = n_ctx - nq + j;
      for (int h = 0; h < c.heads; ++h) {
        const int kvh = h / (c.heads / c.kv_heads);
        std::vector<double> logit(n_ctx, -INFINITY);
        double mx = -INFINITY;
        for (int p = 0; p < n_ctx; ++p) {
          if ((c.causal && p > pos) || (c.window > 0 && pos - p >= c.window)) continue;
          const int64_t blk = table[s * max_blocks + p / c.block_size], slot = p % c.block_size;
          double dot = 0;
          for (int d = 0; d < hd; ++d) {
            dot += static_cast<double>(q.value[(int64_t{t} * c.heads + h) * hd + d]) *
                   kc.value[blk * ks[0] + slot * ks[1] + kvh * ks[2] + d];
          }
          double l = dot * a.scale;
          if (c.softcap > 0) l = c.softcap * std::tanh(l / c.softcap);
          logit[p] = l;
          mx = std::max(mx, l);
        }
        std::vector<double> acc(hd, 0.0);
        double sum = 0;
        for (int p = 0; p < n_ctx; ++p) {
          if (logit[p] == -INFINITY) continue;
          const double w = std::exp(logit[p] - mx);
          sum += w;
          const int64_t blk = table[s * max_blocks + p / c.block_size], slot = p % c.block_size;
          for (int d = 0; d < hd; ++d) acc[d] += w * vc.value[blk * vs[0] + slot * vs[1] + kvh * vs[2] + d];
        }
        for (int d = 0; d < hd; ++d) {
          const double ref = acc[d] / sum, got = out.read((int64_t{t} * c.heads + h) * hd + d);
          const double tol = 3e-5 + rel * std::fabs(ref);
          worst = std::max(worst, std::fabs(got - ref) / tol);
        }
      }
    }
  }
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the output bytes
  for (uint8_t b : out.bytes) h = (h ^ b) * 1099511628211ull;
  hash = (hash ^ h) * 1099511628211ull;
  const bool ok = worst <= 1.0;
  failures += !ok;
  std::printf("%s %s err/tol=%.3g hash=%016llx\n", ok ? "ok" : "FAIL", c.name, worst, static_cast<unsigned long long>(h));
}

}  // namespace

int main() {
  const Case cases[] = {
      // decode, GQA 4:1, contexts across the 512-key split-K partitions
      {"decode_f32_gqa", ElemType::f32, 8, 2, 64, 16, {1, 17, 64, 600, 1100}, {}},
      // varlen causal prefill, head_dim padded to 40, chunked (queries < context)
      {"prefill_f16_pad", ElemType::f16, 4, 2, 36, 16, {5, 7, 700}, {1, 7, 40}},
      // MQA, sliding window and softcap (Gemma)
      {"prefill_bf16_window_softcap", ElemType::bf16, 4, 1, 64, 32, {90, 530}, {90, 9}, true, 32, 30.0f},
      {"prefill_f32_noncausal", ElemType::f32, 2, 2, 128, 16, {33, 65}, {33, 5}, false},
      {"decode_bf16_window", ElemType::bf16, 8, 8, 80, 16, {700, 3}, {}, true, 100},
  };
  for (const Case& c : cases) run_case(c);
  std::printf("hash=%016llx failures=%d\n", static_cast<unsigned long long>(hash), failures);
  return failures == 0 ? 0 : 1;
}
