// Native memory-safety check of the GGUF parser (csrc/core/gguf_parser.cpp).
//
// Built with AddressSanitizer + UBSan by tests/fuzz/test_fuzz_gguf.py, it parses
// each seed file, every truncation of it, and deterministic random mutations;
// every input lives in an exact-size heap allocation, so reading even one byte
// past the end trips ASan.  Only ModelFormatError may come out of the parser.
//
//   gguf_asan_driver ITERATIONS RNG_SEED FILE...
//
// With -DTINYFAST_LIBFUZZER it is instead a libFuzzer target (clang only):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -DTINYFAST_LIBFUZZER \
//       -Icsrc csrc/core/gguf_parser.cpp tests/fuzz/gguf_asan_driver.cpp -o gguf_libfuzzer
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include "core/errors.h"
#include "core/gguf_parser.h"

namespace {

using tinyfast::core::ModelFormatError;

// true if parsed, false if rejected; anything else aborts the run.
bool parse_exact(const uint8_t* data, size_t n) {
  auto exact = std::make_unique<uint8_t[]>(n);  // exactly n bytes: ASan guards the end
  if (n) std::memcpy(exact.get(), data, n);
  try {
    auto file = tinyfast::core::gguf::parse(exact.get(), n);
    // Everything the parser returns must lie inside the input.
    for (const auto& t : file.tensors) {
      if (t.offset > n || t.n_bytes > n - t.offset) {
        std::fprintf(stderr, "tensor '%s' outside the input\n", t.name.c_str());
        std::abort();
      }
    }
    return true;
  } catch (const ModelFormatError&) {
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception (not ModelFormatError): %s\n", e.what());
    std::abort();
  }
}

}  // namespace

#ifdef TINYFAST_LIBFUZZER

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse_exact(data, size);
  return 0;
}

#else

namespace {

struct SplitMix64 {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n ? static_cast<size_t>(next() % n) : 0; }
};

const uint64_t kInteresting[] = {0,       1,           2,           7,          8,          9,
                                 12,      13,          31,          32,         33,         64,
                                 255,     256,         1ull << 16,  1ull << 20, (1ull << 20) + 1,
                                 1ull << 31, 0xffffffffull, 1ull << 32, 1ull << 62, (1ull << 63) - 1,
                                 1ull << 63, ~0ull - 31, ~0ull};

void mutate(std::vector<uint8_t>& b, SplitMix64& rng) {
  const int ops = 1 + static_cast<int>(rng.below(6));
  for (int k = 0; k < ops; ++k) {
    const size_t pos = rng.below(b.size() + 1);
    switch (rng.below(6)) {
      case 0:
        if (pos < b.size()) b[pos] = static_cast<uint8_t>(rng.next());
        break;
      case 1:
        if (pos < b.size()) b[pos] ^= static_cast<uint8_t>(1u << rng.below(8));
        break;
      case 2: {  // an interesting 32- or 64-bit value over whatever field is there
        const uint64_t v = kInteresting[rng.below(std::size(kInteresting))];
        const size_t width = rng.below(2) ? 8 : 4;
        for (size_t i = 0; i < width && pos + i < b.size(); ++i) b[pos + i] = static_cast<uint8_t>(v >> (8 * i));
        break;
      }
      case 3: {
        const size_t len = 1 + rng.below(16);
        if (pos < b.size()) b.erase(b.begin() + pos, b.begin() + std::min(b.size(), pos + len));
        break;
      }
      case 4: {
        const size_t len = 1 + rng.below(16);
        for (size_t i = 0; i < len; ++i) b.insert(b.begin() + pos, static_cast<uint8_t>(rng.next()));
        break;
      }
      default: {  // duplicate a chunk (repeats records)
        if (b.empty()) break;
        const size_t from = rng.below(b.size());
        const size_t len = std::min(b.size() - from, 1 + rng.below(64));
        std::vector<uint8_t> chunk(b.begin() + from, b.begin() + from + len);
        b.insert(b.begin() + std::min(pos, b.size()), chunk.begin(), chunk.end());
        break;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s ITERATIONS RNG_SEED FILE...\n", argv[0]);
    return 2;
  }
  const long iterations = std::strtol(argv[1], nullptr, 10);
  SplitMix64 rng{std::strtoull(argv[2], nullptr, 10)};
  uint64_t parsed = 0, rejected = 0;
  for (int f = 3; f < argc; ++f) {
    std::ifstream in(argv[f], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", argv[f]);
      return 2;
    }
    const std::vector<uint8_t> seed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t n = 0; n <= seed.size(); ++n) (parse_exact(seed.data(), n) ? parsed : rejected)++;
    for (long i = 0; i < iterations; ++i) {
      std::vector<uint8_t> b = seed;
      mutate(b, rng);
      (parse_exact(b.data(), b.size()) ? parsed : rejected)++;
    }
  }
  std::printf("parsed %llu, rejected %llu\n", static_cast<unsigned long long>(parsed),
              static_cast<unsigned long long>(rejected));
  return 0;
}

#endif
