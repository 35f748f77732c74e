#pragma once
// A bounds-checked GGUF v2/v3 parser over a byte span (the caller maps the
// file; nothing here reads outside [data, data + size)).
//
// It returns the metadata (typed values) and the tensor table; it never
// touches tensor data.  Anything malformed raises ModelFormatError naming the
// problem and the byte offset where it was found.  Every allocation is bounded
// by the bytes the file actually has *and* by the fixed caps below, so a
// hostile header cannot make the parser reserve memory it does not back.
//
// Layout (all little-endian; big-endian files are rejected):
//   "GGUF" u32 version  u64 tensor_count  u64 kv_count
//   kv_count x { string key, u32 value_type, value }
//   tensor_count x { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the tensor data section;
//   each tensor's offset is relative to that section and a multiple of the alignment.
//   string = u64 length + bytes; array = u32 element type + u64 count + elements.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tinyfast::core::gguf {

// Caps on what a file may ask for.  Real models sit far below each one
// (Gemma 3: 33 keys, 236 tensors, 262144-entry vocab, ~1 KB chat template).
struct Limits {
  static constexpr uint64_t kMaxKeyValues = 1u << 16;
  static constexpr uint64_t kMaxTensors = 1u << 20;
  static constexpr uint64_t kMaxKeyBytes = 65535;            // GGUF spec
  static constexpr uint64_t kMaxTensorNameBytes = 64;        // GGUF spec (ggml keeps 63 + NUL)
  static constexpr uint64_t kMaxStringBytes = 1u << 20;      // any string value or array element
  // tokenizer.chat_template*, tokenizer.huggingface.json, tokenizer.rwkv.world
  // carry whole templates / tokenizer files.
  static constexpr uint64_t kMaxLargeStringBytes = 64u << 20;
  static constexpr uint64_t kMaxArrayLength = 1u << 20;      // elements of one array
  static constexpr uint64_t kMaxTokenizerArrayLength = 1u << 22;  // arrays under "tokenizer."
  // Across every array in the file (nested ones included): bounds the memory
  // that per-element objects (std::string, Python str) can cost.
  static constexpr uint64_t kMaxTotalArrayElements = 1u << 24;
  static constexpr int kMaxArrayDepth = 2;                   // an array of arrays, no deeper
  // Inner arrays cost a whole Value each (~150 B for >= 12 B of file); no
  // known model uses them, so they get a small budget of their own.
  static constexpr uint64_t kMaxNestedArrays = 1u << 16;
  static constexpr uint32_t kMaxDims = 4;                    // GGML_MAX_DIMS
  static constexpr uint32_t kDefaultAlignment = 32;
  static constexpr int64_t kMaxBlockCount = 1024;            // <arch>.block_count
};

// GGUF metadata value types, as numbered in the file.
enum class ValueType : uint32_t {
  Uint8 = 0,
  Int8 = 1,
  Uint16 = 2,
  Int16 = 3,
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  Uint64 = 10,
  Int64 = 11,
  Float64 = 12,
};

const char* value_type_name(ValueType t);  // "uint32", "string", "array", ...
bool is_integer_type(ValueType t);
bool is_float_type(ValueType t);
// Bytes of one element of a fixed-size type; 0 for string and array.
size_t value_type_size(ValueType t);

struct Value {
  ValueType type = ValueType::Uint8;
  // Scalars, decoded: unsigned integers and bool in `u`, signed in `i`, floats in `f`.
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  std::string str;  // String (bytes as stored; UTF-8 is not enforced for values)
  // Array: element type and count; elements live in exactly one of the three
  // vectors below according to elem_type.
  ValueType elem_type = ValueType::Uint8;
  uint64_t length = 0;
  std::vector<uint8_t> raw;          // fixed-size elements, packed little-endian as stored
  std::vector<std::string> strings;  // string elements
  std::vector<Value> items;          // nested arrays

  // The value as an integer if it is one (any integer type, in int64 range).
  bool get_int(int64_t& out) const;
  // The value as a double if it is a float type.
  bool get_float(double& out) const;
  std::string type_string() const;   // "uint32", "array[string]", "array[array[int32]]"
};

struct KeyValue {
  std::string key;
  Value value;
  uint64_t offset = 0;        // byte where the key starts
  uint64_t value_offset = 0;  // byte where the value starts
};

// Storage layout of a ggml tensor type.  Sizes follow ggml's block structs
// (see csrc/core/quant_blocks.h for the ones the kernels use).
struct TypeTraits {
  uint32_t id;
  const char* name;       // lowercase ggml spelling: "f32", "q4_k", ...
  uint32_t block_elems;   // elements per block (1 for plain types)
  uint32_t block_bytes;   // bytes per block
};
// nullptr for ids ggml never defined or has removed from GGUF (4, 5, 31-33, 36-38).
const TypeTraits* ggml_type_traits(uint32_t id);
const std::vector<TypeTraits>& ggml_types();

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> shape;  // GGUF order: shape[0] is the contiguous dimension (ggml ne[0])
  uint32_t type = 0;            // ggml type id
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  uint64_t offset = 0;          // absolute byte offset of the data in the file
  uint64_t info_offset = 0;     // byte where this tensor's info record starts
};

struct File {
  uint32_t version = 0;
  uint32_t alignment = Limits::kDefaultAlignment;
  uint64_t data_offset = 0;     // absolute start of the tensor data section
  std::vector<KeyValue> metadata;  // file order
  std::vector<TensorInfo> tensors; // file order

  const KeyValue* find(std::string_view key) const;
};

// Parses the header, metadata and tensor table of the GGUF image
// [data, data + size).  Throws core::ModelFormatError on malformed input.
File parse(const uint8_t* data, size_t size);

}  // namespace tinyfast::core::gguf
