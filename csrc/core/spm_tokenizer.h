#pragma once
// SentencePiece-BPE encoding of a GGUF "llama" vocabulary (token strings,
// scores, llama.cpp token types), with no merge list: a pair of adjacent
// symbols merges when their concatenation is a NORMAL token, best score first.
//
// It reproduces, id for id, the `tokenizers` pipeline that
// tinyfast.tokenizer.gguf_tokenizer.build_hf_tokenizer assembles (which agrees
// with transformers and llama.cpp on the test corpus), because building that
// pipeline for a 262k vocabulary takes seconds (513k derived merges):
//   1. Atomic tokens (CONTROL/UNKNOWN = special, USER_DEFINED = plain) are cut
//      out of the raw text, leftmost-longest and non-overlapping, as
//      tokenizers' AddedVocabulary does. Without special parsing a special
//      match is still consumed but left as text, exactly like
//      `encode_special_tokens = True` there.
//   2. Each stretch between them: "▁" in front (add_space_prefix), " " -> "▁".
//   3. Symbols are its characters; a character that is no token becomes its
//      UTF-8 bytes as <0xNN> tokens (when the vocabulary has byte tokens and
//      all its bytes), else one fused unknown token, else nothing.
//   4. Merge by the rank the derived merge list gave each pair:
//      (-score, normal id) of the merged string, then the pair's ids, then the
//      leftmost position (see PairRank in the .cpp).
//   5. BOS/EOS around the whole text when asked.
// Immutable after construction: encode may run on many threads at once.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tinyfast::core {

// llama.cpp's token types (tokenizer.ggml.token_type).
enum SpmTokenType : int32_t {
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,
  kTokenUserDefined = 4,
  kTokenUnused = 5,
  kTokenByte = 6,
};

struct SpmOptions {
  int32_t bos_id = -1;  // -1: none
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = true;
};

class SpmTokenizer {
 public:
  // `blob` holds every token's UTF-8 bytes back to back; token i is
  // blob[offsets[i], offsets[i + 1]). Throws std::invalid_argument on
  // inconsistent sizes or ids.
  SpmTokenizer(std::string blob, std::vector<uint64_t> offsets, std::vector<float> scores,
               std::vector<int32_t> types, SpmOptions options);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens, bool parse_special) const;

  int32_t size() const { return static_cast<int32_t>(types_.size()); }
  std::string_view token(int32_t id) const {
    return std::string_view(blob_).substr(offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  // The first id spelled `s` (the one text encodes to), or -1.
  int32_t find(std::string_view s) const;
  // The bytes token `id` decodes to: "▁" -> " " for normal tokens, the byte of
  // a <0xNN> byte token, the token's own text for the others.
  std::string piece(int32_t id) const;
  const SpmOptions& options() const { return options_; }

 private:
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> edges;  // sorted by byte
    int32_t token = -1;                              // an atomic token ends here
    bool special = false;
  };
  struct AtomicMatch {
    size_t length = 0;  // 0: none
    int32_t token = -1;
    bool special = false;
  };

  std::vector<int32_t> build_index();  // returns each id's first id
  void build_merge_ranks(const std::vector<int32_t>& first_id);
  void build_atomic_trie(const std::vector<int32_t>& first_id);
  void insert_atomic(std::string_view s, int32_t id, bool special);
  AtomicMatch longest_atomic(std::string_view text, size_t pos) const;
  void encode_stretch(std::string_view text, std::vector<int32_t>& out) const;

  std::string blob_;
  std::vector<uint64_t> offsets_;
  std::vector<float> scores_;
  std::vector<int32_t> types_;
  SpmOptions options_;

  std::vector<int32_t> slots_;  // open addressing over token strings: first ids, -1 empty
  uint64_t slot_mask_ = 0;

  // Per first id of a string: the (score, id) of the normal token that ranks
  // the merges producing it; merge_id_ < 0: no merge produces this string.
  std::vector<float> merge_score_;
  std::vector<int32_t> merge_id_;

  std::vector<TrieNode> trie_;  // node 0: root
  std::array<int32_t, 256> byte_ids_{};  // first id of "<0xNN>", -1 if absent
  bool byte_fallback_ = false;
  int32_t unk_symbol_ = -1;     // first id spelled like the unknown token
};

}  // namespace tinyfast::core
