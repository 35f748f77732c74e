#pragma once
// Typed failures of the core; the bindings turn each into its own Python
// exception so callers can tell "can never fit" from "not now".
#include <cstdint>
#include <stdexcept>
#include <string>

namespace tinyfast::core {

// A request that cannot be served with this configuration, ever.
struct CapacityError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// An act needed more free KV blocks than the pool has right now.
struct NoFreeBlocksError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A sequence id the manager or scheduler does not know.
struct UnknownSequenceError : std::out_of_range {
  using std::out_of_range::out_of_range;
};

// Internal state broke an invariant (a bug, never bad input).
struct InvariantError : std::logic_error {
  using std::logic_error::logic_error;
};

// A model file that is malformed or that tinyfast cannot read (bad magic,
// truncation, counts the file cannot hold, inconsistent tensor layout...).
// `offset` is the byte of the file where the problem was found, or kNoOffset
// when the problem is not tied to one place.
struct ModelFormatError : std::invalid_argument {
  static constexpr uint64_t kNoOffset = UINT64_MAX;
  explicit ModelFormatError(const std::string& what, uint64_t at = kNoOffset)
      : std::invalid_argument(what), offset(at) {}
  uint64_t offset;
};

}  // namespace tinyfast::core
