#include "core/gguf_parser.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "core/errors.h"
#include "core/quant_blocks.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF parser decodes little-endian fields by memcpy; big-endian hosts are not supported"
#endif

namespace tinyfast::core::gguf {
namespace {

[[noreturn]] void fail(uint64_t offset, const std::string& what) {
  throw ModelFormatError("GGUF: " + what + " at byte " + std::to_string(offset), offset);
}

std::string quoted(std::string_view s) {
  // Names in messages are capped so a 64 MiB string cannot bloat an error.
  constexpr size_t kShown = 80;
  std::string out = "'";
  for (char c : s.substr(0, kShown)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  if (s.size() > kShown) out += "...";
  return out + "'";
}

// a * b, or false on uint64 overflow.
bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

bool checked_add(uint64_t a, uint64_t b, uint64_t& out) {
  if (b > std::numeric_limits<uint64_t>::max() - a) return false;
  out = a + b;
  return true;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < static_cast<size_t>(len)) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// The full ggml type table, so any real GGUF's layout can be validated even
// when tinyfast has no kernel for a type.  Sizes are ggml's block structs
// (ggml-common.h).  Note: gguf-py's table still lists Q8_1 at 40 bytes (its old
// float-scale layout); ggml has stored it as 36 bytes (two fp16) for years.
const std::vector<TypeTraits> kTypes = {
    {0, "f32", 1, 4},           {1, "f16", 1, 2},          {2, "q4_0", 32, 18},
    {3, "q4_1", 32, 20},        {6, "q5_0", 32, 22},       {7, "q5_1", 32, 24},
    {8, "q8_0", 32, 34},        {9, "q8_1", 32, 36},       {10, "q2_k", 256, 84},
    {11, "q3_k", 256, 110},     {12, "q4_k", 256, 144},    {13, "q5_k", 256, 176},
    {14, "q6_k", 256, 210},     {15, "q8_k", 256, 292},    {16, "iq2_xxs", 256, 66},
    {17, "iq2_xs", 256, 74},    {18, "iq3_xxs", 256, 98},  {19, "iq1_s", 256, 50},
    {20, "iq4_nl", 32, 18},     {21, "iq3_s", 256, 110},   {22, "iq2_s", 256, 82},
    {23, "iq4_xs", 256, 136},   {24, "i8", 1, 1},          {25, "i16", 1, 2},
    {26, "i32", 1, 4},          {27, "i64", 1, 8},         {28, "f64", 1, 8},
    {29, "iq1_m", 256, 56},     {30, "bf16", 1, 2},        {34, "tq1_0", 256, 54},
    {35, "tq2_0", 256, 66},     {39, "mxfp4", 32, 17},     {40, "nvfp4", 64, 36},
    {41, "q1_0", 128, 18},
};

// The kernels' table (quant_blocks.h) and this one must agree on every type both know.
bool agrees_with_kernel_table() {
  for (const auto& k : quant::kFormatTable) {
    const TypeTraits* t = ggml_type_traits(static_cast<uint32_t>(k.format));
    if (!t || t->block_elems != static_cast<uint32_t>(k.block_elems) ||
        t->block_bytes != static_cast<uint32_t>(k.block_bytes) || std::strcmp(t->name, k.name) != 0)
      return false;
  }
  return true;
}

// Reads fields at a cursor, checking every byte it touches.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  uint64_t size() const { return size_; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(pos_, std::string("truncated ") + what + ": needs " + std::to_string(n) + " bytes, file has " +
                     std::to_string(remaining()) + " left");
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A length-prefixed string of at most `cap` bytes; `what` names it in errors
  // (a callable, so the hot path over 262144 vocabulary strings builds no message).
  template <typename What>
  std::string read_string(uint64_t cap, const What& what) {
    const uint64_t at = pos_;
    if (remaining() < 8) fail(at, "truncated " + what() + " length: needs 8 bytes, file has " +
                                      std::to_string(remaining()) + " left");
    uint64_t len;
    std::memcpy(&len, data_ + pos_, 8);
    pos_ += 8;
    if (len > cap)
      fail(at, what() + " length " + std::to_string(len) + " exceeds the cap of " + std::to_string(cap) + " bytes");
    if (len > remaining())
      fail(pos_, "truncated " + what() + ": needs " + std::to_string(len) + " bytes, file has " +
                     std::to_string(remaining()) + " left");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

  void copy_to(uint8_t* dst, uint64_t n) {
    if (n) std::memcpy(dst, data_ + pos_, static_cast<size_t>(n));
    pos_ += n;
  }
  const uint8_t* here() const { return data_ + pos_; }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

bool is_large_string_key(std::string_view key) {
  return key.rfind("tokenizer.chat_template", 0) == 0 || key == "tokenizer.huggingface.json" ||
         key == "tokenizer.rwkv.world";
}

class Parser {
 public:
  Parser(const uint8_t* data, size_t size) : in_(data, size) {}

  File run() {
    read_header();
    read_metadata();
    validate_metadata();
    read_tensor_infos();
    place_tensor_data();
    return std::move(file_);
  }

 private:
  Cursor in_;
  File file_;
  uint64_t tensor_count_ = 0;
  uint64_t kv_count_ = 0;
  uint64_t array_elements_ = 0;  // across the whole file
  uint64_t nested_arrays_ = 0;

  void read_header() {
    in_.need(4, "magic");
    const uint8_t* m = in_.here();
    if (std::memcmp(m, "GGUF", 4) != 0) {
      static const char* hex = "0123456789abcdef";
      std::string got;
      for (int k = 0; k < 4; ++k) {
        got += hex[m[k] >> 4];
        got += hex[m[k] & 15];
      }
      fail(0, "bad magic 0x" + got + " (expected \"GGUF\" = 0x47475546)");
    }
    in_.read<uint32_t>("magic");
    const uint64_t at = in_.pos();
    const auto version = in_.read<uint32_t>("version");
    if (version == 0x02000000u || version == 0x03000000u)
      fail(at, "big-endian GGUF (version field " + std::to_string(version) + ") is not supported");
    if (version == 1) fail(at, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (version != 2 && version != 3)
      fail(at, "unsupported GGUF version " + std::to_string(version) + " (only versions 2 and 3)");
    file_.version = version;

    // The smallest record each count can stand for bounds it by the bytes left:
    // a tensor info is >= 8 (name length) + 1 + 4 (n_dims) + 8 (one dim) + 4 + 8 bytes,
    // a key-value >= 8 (key length) + 1 + 4 (type) + 1 (a uint8 value).
    constexpr uint64_t kMinTensorInfo = 33, kMinKeyValue = 14;
    const uint64_t at_count = in_.pos();
    tensor_count_ = in_.read<uint64_t>("tensor_count");
    const uint64_t at_kv = in_.pos();
    const auto kv_count = in_.read<uint64_t>("kv_count");
    if (tensor_count_ > Limits::kMaxTensors)
      fail(at_count, "tensor_count " + std::to_string(tensor_count_) + " exceeds the cap of " +
                         std::to_string(Limits::kMaxTensors));
    if (kv_count > Limits::kMaxKeyValues)
      fail(at_kv, "kv_count " + std::to_string(kv_count) + " exceeds the cap of " +
                      std::to_string(Limits::kMaxKeyValues));
    // Both records follow, so together they must fit in what is left.
    const uint64_t min_bytes = tensor_count_ * kMinTensorInfo + kv_count * kMinKeyValue;  // < 2^27, no overflow
    if (min_bytes > in_.remaining())
      fail(at_count, "tensor_count " + std::to_string(tensor_count_) + " and kv_count " + std::to_string(kv_count) +
                         " need at least " + std::to_string(min_bytes) + " bytes, file has " +
                         std::to_string(in_.remaining()) + " left");
    file_.metadata.reserve(static_cast<size_t>(kv_count));
    kv_count_ = kv_count;
  }

  void read_metadata() {
    std::unordered_set<std::string> seen;
    for (uint64_t k = 0; k < kv_count_; ++k) {
      KeyValue kv;
      kv.offset = in_.pos();
      kv.key = in_.read_string(Limits::kMaxKeyBytes, [] { return std::string("metadata key"); });
      if (kv.key.empty()) fail(kv.offset, "empty metadata key");
      if (!valid_utf8(kv.key)) fail(kv.offset, "metadata key " + quoted(kv.key) + " is not valid UTF-8");
      if (!seen.insert(kv.key).second) fail(kv.offset, "duplicate metadata key " + quoted(kv.key));
      const uint64_t type_at = in_.pos();
      const auto type = in_.read<uint32_t>("value type");
      if (type > static_cast<uint32_t>(ValueType::Float64))
        fail(type_at, "key " + quoted(kv.key) + " has unknown value type " + std::to_string(type));
      kv.value_offset = in_.pos();
      read_value(static_cast<ValueType>(type), kv.key, 0, kv.value);
      file_.metadata.push_back(std::move(kv));
    }
  }

  void read_scalar(ValueType t, const std::string& key, Value& v) {
    const uint64_t at = in_.pos();
    switch (t) {
      case ValueType::Uint8: v.u = in_.read<uint8_t>("uint8 value"); break;
      case ValueType::Int8: v.i = in_.read<int8_t>("int8 value"); break;
      case ValueType::Uint16: v.u = in_.read<uint16_t>("uint16 value"); break;
      case ValueType::Int16: v.i = in_.read<int16_t>("int16 value"); break;
      case ValueType::Uint32: v.u = in_.read<uint32_t>("uint32 value"); break;
      case ValueType::Int32: v.i = in_.read<int32_t>("int32 value"); break;
      case ValueType::Uint64: v.u = in_.read<uint64_t>("uint64 value"); break;
      case ValueType::Int64: v.i = in_.read<int64_t>("int64 value"); break;
      case ValueType::Float32: v.f = in_.read<float>("float32 value"); break;
      case ValueType::Float64: v.f = in_.read<double>("float64 value"); break;
      case ValueType::Bool: {
        const auto b = in_.read<uint8_t>("bool value");
        if (b > 1) fail(at, "key " + quoted(key) + " has bool byte " + std::to_string(b) + " (must be 0 or 1)");
        v.u = b;
        break;
      }
      default: fail(at, "internal: not a scalar type");
    }
  }

  void read_value(ValueType t, const std::string& key, int depth, Value& v) {
    v.type = t;
    if (t == ValueType::String) {
      const uint64_t cap = is_large_string_key(key) ? Limits::kMaxLargeStringBytes : Limits::kMaxStringBytes;
      v.str = in_.read_string(cap, [&] { return "string value of key " + quoted(key); });
      return;
    }
    if (t != ValueType::Array) {
      read_scalar(t, key, v);
      return;
    }
    const uint64_t at = in_.pos();
    const auto elem = in_.read<uint32_t>("array element type");
    if (elem > static_cast<uint32_t>(ValueType::Float64))
      fail(at, "array under key " + quoted(key) + " has unknown element type " + std::to_string(elem));
    v.elem_type = static_cast<ValueType>(elem);
    if (v.elem_type == ValueType::Array && depth + 1 >= Limits::kMaxArrayDepth)
      fail(at, "array under key " + quoted(key) + " nests deeper than " + std::to_string(Limits::kMaxArrayDepth) +
                   " levels");
    const uint64_t len_at = in_.pos();
    v.length = in_.read<uint64_t>("array length");
    const uint64_t cap =
        key.rfind("tokenizer.", 0) == 0 ? Limits::kMaxTokenizerArrayLength : Limits::kMaxArrayLength;
    if (v.length > cap)
      fail(len_at, "array under key " + quoted(key) + " has " + std::to_string(v.length) +
                       " elements, more than the cap of " + std::to_string(cap));
    // Every element takes at least this many bytes in the file.
    const size_t fixed = value_type_size(v.elem_type);
    const uint64_t min_elem = fixed ? fixed : (v.elem_type == ValueType::String ? 8 : 12);
    if (v.length > in_.remaining() / min_elem)
      fail(len_at, "array under key " + quoted(key) + " claims " + std::to_string(v.length) + " " +
                       value_type_name(v.elem_type) + " elements, more than the " + std::to_string(in_.remaining()) +
                       " bytes left can hold");
    array_elements_ += v.length;
    if (array_elements_ > Limits::kMaxTotalArrayElements)
      fail(len_at, "metadata arrays hold more than " + std::to_string(Limits::kMaxTotalArrayElements) +
                       " elements in total");
    const auto n = static_cast<size_t>(v.length);
    if (fixed) {
      v.raw.resize(n * fixed);  // <= remaining bytes, checked above
      if (v.elem_type == ValueType::Bool) {
        for (size_t k = 0; k < n; ++k) {
          if (in_.here()[k] > 1)
            fail(in_.pos() + k, "array under key " + quoted(key) + " has bool byte " +
                                    std::to_string(in_.here()[k]) + " (must be 0 or 1)");
        }
      }
      in_.copy_to(v.raw.data(), n * fixed);
    } else if (v.elem_type == ValueType::String) {
      v.strings.reserve(n);
      const uint64_t str_cap = is_large_string_key(key) ? Limits::kMaxLargeStringBytes : Limits::kMaxStringBytes;
      for (size_t k = 0; k < n; ++k)
        v.strings.push_back(in_.read_string(str_cap, [&] {
          return "string element " + std::to_string(k) + " of key " + quoted(key);
        }));
    } else {
      nested_arrays_ += v.length;
      if (nested_arrays_ > Limits::kMaxNestedArrays)
        fail(len_at, "metadata holds more than " + std::to_string(Limits::kMaxNestedArrays) + " nested arrays");
      v.items.resize(n);
      for (size_t k = 0; k < n; ++k) read_value(ValueType::Array, key, depth + 1, v.items[k]);
    }
  }

  // ---- semantic checks on well-known keys --------------------------------

  enum class Kind { String, Uint32, Int, Float, IntOrIntArray, StringArray, Float32Array, Int32Array };

  struct Rule {
    const char* name;  // full key, or suffix after "<arch>." when arch_scoped
    bool arch_scoped;
    Kind kind;
    double min, max;   // for numbers (and each element of per-layer arrays)
  };

  static constexpr double kInf = std::numeric_limits<double>::infinity();
  static constexpr double kI32 = 2147483647.0;

  static const std::vector<Rule>& rules() {
    static const std::vector<Rule> r = {
        {"general.architecture", false, Kind::String, 0, 0},
        {"general.alignment", false, Kind::Uint32, 0, 4294967295.0},  // power of two, >= 8: below
        {"general.quantization_version", false, Kind::Int, 0, kI32},
        {"general.file_type", false, Kind::Int, 0, kI32},
        {"tokenizer.ggml.model", false, Kind::String, 0, 0},
        {"tokenizer.ggml.pre", false, Kind::String, 0, 0},
        {"tokenizer.ggml.tokens", false, Kind::StringArray, 0, 0},
        {"tokenizer.ggml.scores", false, Kind::Float32Array, 0, 0},
        {"tokenizer.ggml.token_type", false, Kind::Int32Array, 0, 0},
        {"tokenizer.ggml.merges", false, Kind::StringArray, 0, 0},
        {"tokenizer.ggml.bos_token_id", false, Kind::Int, 0, kI32},
        {"tokenizer.ggml.eos_token_id", false, Kind::Int, 0, kI32},
        {"tokenizer.ggml.unknown_token_id", false, Kind::Int, 0, kI32},
        {"tokenizer.ggml.padding_token_id", false, Kind::Int, 0, kI32},
        {"tokenizer.chat_template", false, Kind::String, 0, 0},
        {"block_count", true, Kind::Int, 1, static_cast<double>(Limits::kMaxBlockCount)},
        {"context_length", true, Kind::Int, 1, 1u << 30},
        {"embedding_length", true, Kind::Int, 1, 1u << 20},
        {"feed_forward_length", true, Kind::IntOrIntArray, 0, 1u << 22},
        {"vocab_size", true, Kind::Int, 1, kI32},
        {"attention.head_count", true, Kind::IntOrIntArray, 1, 1u << 14},
        {"attention.head_count_kv", true, Kind::IntOrIntArray, 1, 1u << 14},
        {"attention.key_length", true, Kind::Int, 1, 1u << 16},
        {"attention.value_length", true, Kind::Int, 1, 1u << 16},
        {"attention.sliding_window", true, Kind::Int, 0, kI32},
        {"attention.layer_norm_rms_epsilon", true, Kind::Float, 0, 1},
        {"attention.layer_norm_epsilon", true, Kind::Float, 0, 1},
        {"rope.dimension_count", true, Kind::Int, 0, 1u << 16},
        {"rope.freq_base", true, Kind::Float, 0, kInf},
        {"rope.scaling.type", true, Kind::String, 0, 0},
        {"rope.scaling.factor", true, Kind::Float, 0, kInf},
        {"rope.scaling.original_context_length", true, Kind::Int, 1, 1u << 30},
        {"expert_count", true, Kind::Int, 0, 1u << 16},
        {"expert_used_count", true, Kind::Int, 0, 1u << 16},
    };
    return r;
  }

  [[noreturn]] static void type_mismatch(const KeyValue& kv, const char* want) {
    fail(kv.value_offset, "key " + quoted(kv.key) + " must be " + want + ", found " + kv.value.type_string());
  }

  static void check_range(const KeyValue& kv, double x, double lo, double hi, const char* what = "") {
    if (!(x >= lo && x <= hi)) {  // also catches NaN
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s = %.17g is out of range [%.17g, %.17g]", what, x, lo, hi);
      fail(kv.value_offset, "key " + quoted(kv.key) + buf);
    }
  }

  void check_rule(const KeyValue& kv, const Rule& r) {
    const Value& v = kv.value;
    const bool is_array = v.type == ValueType::Array;
    switch (r.kind) {
      case Kind::String:
        if (v.type != ValueType::String) type_mismatch(kv, "a string");
        return;
      case Kind::Uint32:
        if (v.type != ValueType::Uint32) type_mismatch(kv, "uint32");
        check_range(kv, static_cast<double>(v.u), r.min, r.max);
        return;
      case Kind::Int: {
        if (!is_integer_type(v.type)) type_mismatch(kv, "an integer");
        int64_t x;
        check_range(kv, v.get_int(x) ? static_cast<double>(x) : static_cast<double>(v.u), r.min, r.max);
        return;
      }
      case Kind::Float: {
        double x;
        if (!v.get_float(x)) type_mismatch(kv, "a float");
        check_range(kv, x, r.min, r.max);
        return;
      }
      case Kind::IntOrIntArray: {
        if (!is_array) {
          Rule scalar = r;
          scalar.kind = Kind::Int;
          check_rule(kv, scalar);
          return;
        }
        // Per-layer values: one integer per block; 0 marks a layer without it.
        if (!is_integer_type(v.elem_type)) type_mismatch(kv, "an integer or an array of integers");
        if (v.length < 1 || v.length > static_cast<uint64_t>(Limits::kMaxBlockCount))
          fail(kv.value_offset, "key " + quoted(kv.key) + " has " + std::to_string(v.length) +
                                    " per-layer values (must be 1.." + std::to_string(Limits::kMaxBlockCount) + ")");
        for (uint64_t k = 0; k < v.length; ++k) {
          Value e;
          e.type = v.elem_type;
          const size_t sz = value_type_size(v.elem_type);
          uint64_t bits = 0;
          std::memcpy(&bits, v.raw.data() + k * sz, sz);
          int64_t x;
          if (v.elem_type == ValueType::Int8) x = static_cast<int8_t>(bits);
          else if (v.elem_type == ValueType::Int16) x = static_cast<int16_t>(bits);
          else if (v.elem_type == ValueType::Int32) x = static_cast<int32_t>(bits);
          else if (v.elem_type == ValueType::Int64) x = static_cast<int64_t>(bits);
          else x = bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? -1 : static_cast<int64_t>(bits);
          check_range(kv, static_cast<double>(x), 0, r.max, ("[" + std::to_string(k) + "]").c_str());
        }
        return;
      }
      case Kind::StringArray:
        if (!is_array || v.elem_type != ValueType::String) type_mismatch(kv, "array[string]");
        return;
      case Kind::Float32Array:
        if (!is_array || v.elem_type != ValueType::Float32) type_mismatch(kv, "array[float32]");
        return;
      case Kind::Int32Array:
        if (!is_array || v.elem_type != ValueType::Int32) type_mismatch(kv, "array[int32]");
        return;
    }
  }

  void validate_metadata() {
    const KeyValue* arch = file_.find("general.architecture");
    std::string prefix;
    if (arch && arch->value.type == ValueType::String) {
      const std::string& a = arch->value.str;
      // Used as a key prefix: keep it to the identifier characters real files use.
      const bool ok = !a.empty() && a.size() <= 64 &&
                      std::all_of(a.begin(), a.end(), [](char c) {
                        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
                      });
      if (!ok) fail(arch->value_offset, "general.architecture " + quoted(a) + " is not a lowercase identifier");
      prefix = a + ".";
    }
    for (const Rule& r : rules()) {
      if (r.arch_scoped && prefix.empty()) continue;
      const KeyValue* kv = file_.find(r.arch_scoped ? prefix + r.name : std::string(r.name));
      if (kv) check_rule(*kv, r);
    }
    if (const KeyValue* al = file_.find("general.alignment")) {
      const uint64_t a = al->value.u;
      if (a == 0 || (a & (a - 1)) != 0)
        fail(al->value_offset, "general.alignment " + std::to_string(a) + " is not a power of two");
      if (a < 8) fail(al->value_offset, "general.alignment " + std::to_string(a) + " is not a multiple of 8");
      file_.alignment = static_cast<uint32_t>(a);
    }
    // The per-token arrays describe the same vocabulary.
    if (const KeyValue* tokens = file_.find("tokenizer.ggml.tokens")) {
      for (const char* name : {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"}) {
        const KeyValue* other = file_.find(name);
        if (other && other->value.length != tokens->value.length)
          fail(other->value_offset, std::string(name) + " has " + std::to_string(other->value.length) +
                                        " entries but tokenizer.ggml.tokens has " +
                                        std::to_string(tokens->value.length));
      }
    }
  }

  // ---- tensor table ---------------------------------------------------------

  void read_tensor_infos() {
    std::unordered_set<std::string> seen;
    file_.tensors.reserve(static_cast<size_t>(tensor_count_));  // bounded by bytes left in read_header
    for (uint64_t k = 0; k < tensor_count_; ++k) {
      TensorInfo t;
      t.info_offset = in_.pos();
      t.name = in_.read_string(Limits::kMaxTensorNameBytes,
                               [k] { return "tensor name (tensor #" + std::to_string(k) + ")"; });
      if (t.name.empty()) fail(t.info_offset, "empty tensor name (tensor #" + std::to_string(k) + ")");
      if (!valid_utf8(t.name)) fail(t.info_offset, "tensor name " + quoted(t.name) + " is not valid UTF-8");
      if (!seen.insert(t.name).second) fail(t.info_offset, "duplicate tensor name " + quoted(t.name));
      const std::string who = "tensor " + quoted(t.name);

      const uint64_t dims_at = in_.pos();
      const auto n_dims = in_.read<uint32_t>("tensor n_dims");
      if (n_dims == 0 || n_dims > Limits::kMaxDims)
        fail(dims_at, who + " has n_dims " + std::to_string(n_dims) + " (must be 1.." +
                          std::to_string(Limits::kMaxDims) + ")");
      uint64_t n_elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t at = in_.pos();
        const auto dim = in_.read<uint64_t>("tensor dimension");
        if (dim == 0) fail(at, who + " has dimension " + std::to_string(d) + " = 0");
        if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail(at, who + " has negative dimension " + std::to_string(d) + " (" +
                       std::to_string(static_cast<int64_t>(dim)) + ")");
        if (!checked_mul(n_elements, dim, n_elements) ||
            n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail(at, who + " element count overflows int64");
        t.shape.push_back(dim);
      }
      t.n_elements = n_elements;

      const uint64_t type_at = in_.pos();
      t.type = in_.read<uint32_t>("tensor type");
      const TypeTraits* tt = ggml_type_traits(t.type);
      if (!tt) {
        if (t.type > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()))
          fail(type_at, who + " has negative ggml type " + std::to_string(static_cast<int32_t>(t.type)));
        fail(type_at, who + " has unknown ggml type " + std::to_string(t.type));
      }
      // ggml never splits a block across rows, so the row length is what must divide.
      if (t.shape[0] % tt->block_elems != 0)
        fail(type_at, who + " has row length " + std::to_string(t.shape[0]) + ", not a multiple of the " +
                          tt->name + " block size " + std::to_string(tt->block_elems));
      if (!checked_mul(n_elements / tt->block_elems, tt->block_bytes, t.n_bytes))
        fail(type_at, who + " byte size overflows uint64");

      const uint64_t off_at = in_.pos();
      const auto rel = in_.read<uint64_t>("tensor data offset");
      if (rel % file_.alignment != 0)
        fail(off_at, who + " data offset " + std::to_string(rel) + " is not a multiple of the alignment " +
                         std::to_string(file_.alignment));
      t.offset = rel;  // made absolute once the data section start is known
      file_.tensors.push_back(std::move(t));
    }
  }

  void place_tensor_data() {
    const uint64_t end_of_infos = in_.pos();
    const uint64_t a = file_.alignment;
    uint64_t padded;
    if (!checked_add(end_of_infos, a - 1, padded)) fail(end_of_infos, "data section start overflows uint64");
    file_.data_offset = padded / a * a;
    std::vector<size_t> order(file_.tensors.size());
    for (TensorInfo& t : file_.tensors) {
      uint64_t start, end;
      if (!checked_add(file_.data_offset, t.offset, start) || !checked_add(start, t.n_bytes, end) ||
          end > in_.size())
        fail(t.info_offset, "tensor " + quoted(t.name) + " data (" + std::to_string(t.n_bytes) +
                                " bytes at data offset " + std::to_string(t.offset) + ") extends past the end of the " +
                                std::to_string(in_.size()) + "-byte file (data section starts at byte " +
                                std::to_string(file_.data_offset) + ")");
      t.offset = start;
    }
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      return file_.tensors[x].offset < file_.tensors[y].offset;
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const TensorInfo& prev = file_.tensors[order[k - 1]];
      const TensorInfo& cur = file_.tensors[order[k]];
      if (prev.offset + prev.n_bytes > cur.offset)
        fail(cur.info_offset, "tensor " + quoted(cur.name) + " data [" + std::to_string(cur.offset) + ", " +
                                  std::to_string(cur.offset + cur.n_bytes) + ") overlaps tensor " + quoted(prev.name) +
                                  " data [" + std::to_string(prev.offset) + ", " +
                                  std::to_string(prev.offset + prev.n_bytes) + ")");
    }
  }
};

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::Uint8: return "uint8";
    case ValueType::Int8: return "int8";
    case ValueType::Uint16: return "uint16";
    case ValueType::Int16: return "int16";
    case ValueType::Uint32: return "uint32";
    case ValueType::Int32: return "int32";
    case ValueType::Float32: return "float32";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Array: return "array";
    case ValueType::Uint64: return "uint64";
    case ValueType::Int64: return "int64";
    case ValueType::Float64: return "float64";
  }
  return "unknown";
}

bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::Uint8: case ValueType::Int8: case ValueType::Uint16: case ValueType::Int16:
    case ValueType::Uint32: case ValueType::Int32: case ValueType::Uint64: case ValueType::Int64:
      return true;
    default:
      return false;
  }
}

bool is_float_type(ValueType t) { return t == ValueType::Float32 || t == ValueType::Float64; }

size_t value_type_size(ValueType t) {
  switch (t) {
    case ValueType::Uint8: case ValueType::Int8: case ValueType::Bool: return 1;
    case ValueType::Uint16: case ValueType::Int16: return 2;
    case ValueType::Uint32: case ValueType::Int32: case ValueType::Float32: return 4;
    case ValueType::Uint64: case ValueType::Int64: case ValueType::Float64: return 8;
    default: return 0;
  }
}

bool Value::get_int(int64_t& out) const {
  switch (type) {
    case ValueType::Int8: case ValueType::Int16: case ValueType::Int32: case ValueType::Int64:
      out = i;
      return true;
    case ValueType::Uint8: case ValueType::Uint16: case ValueType::Uint32: case ValueType::Uint64:
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
      out = static_cast<int64_t>(u);
      return true;
    default:
      return false;
  }
}

bool Value::get_float(double& out) const {
  if (!is_float_type(type)) return false;
  out = f;
  return true;
}

std::string Value::type_string() const {
  if (type != ValueType::Array) return value_type_name(type);
  if (elem_type != ValueType::Array) return std::string("array[") + value_type_name(elem_type) + "]";
  // Nested arrays may mix element types; name the first one's.
  return "array[" + (items.empty() ? std::string("array") : items.front().type_string()) + "]";
}

const KeyValue* File::find(std::string_view key) const {
  for (const KeyValue& kv : metadata)
    if (kv.key == key) return &kv;
  return nullptr;
}

const TypeTraits* ggml_type_traits(uint32_t id) {
  for (const TypeTraits& t : kTypes)
    if (t.id == id) return &t;
  return nullptr;
}

const std::vector<TypeTraits>& ggml_types() { return kTypes; }

File parse(const uint8_t* data, size_t size) {
  static const bool tables_agree = agrees_with_kernel_table();
  if (!tables_agree) throw InvariantError("gguf type table disagrees with quant_blocks.h kFormatTable");
  return Parser(data, size).run();
}

}  // namespace tinyfast::core::gguf
