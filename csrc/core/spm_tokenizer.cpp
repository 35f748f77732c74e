#include "core/spm_tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <stdexcept>
#include <utility>

namespace tinyfast::core {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // "▁", SentencePiece's visible space

// Bytes in the UTF-8 character that starts with `lead` (valid text: Python
// strings come in as strict UTF-8).
inline size_t utf8_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

inline size_t count_chars(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xNN>" token (either hex case), or -1.
inline int byte_token_value(std::string_view s) {
  if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
  const int hi = hex_value(s[3]), lo = hex_value(s[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// The order of the merge list gguf_tokenizer.sentencepiece_merges derives:
// sorted by (-score, id) of the merged normal token, then the pair's ids; the
// tokenizers BPE then picks the best-ranked pair and, within one pair, the
// leftmost position. SentencePiece and llama.cpp break score ties by position
// alone; the two differ only when two different pairs of equal score compete,
// and we follow the implementation we are checked against.
struct PairRank {
  float score;
  int32_t rank_id;  // the normal token whose score ranks the merge
  int32_t left;
  int32_t right;
  int32_t pos;      // index of the left symbol
  int32_t merged;   // first id of the concatenation

  // true when `a` merges after `b` (std heap functions keep the max on top)
  static bool later(const PairRank& a, const PairRank& b) {
    if (a.score != b.score) return a.score < b.score;
    if (a.rank_id != b.rank_id) return a.rank_id > b.rank_id;
    if (a.left != b.left) return a.left > b.left;
    if (a.right != b.right) return a.right > b.right;
    return a.pos > b.pos;
  }
};

struct Symbol {
  int32_t id;  // -1 once merged into its left neighbour
  int32_t prev;
  int32_t next;
};

}  // namespace

SpmTokenizer::SpmTokenizer(std::string blob, std::vector<uint64_t> offsets, std::vector<float> scores,
                           std::vector<int32_t> types, SpmOptions options)
    : blob_(std::move(blob)),
      offsets_(std::move(offsets)),
      scores_(std::move(scores)),
      types_(std::move(types)),
      options_(options) {
  const size_t n = types_.size();
  if (n == 0 || n >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw std::invalid_argument("SpmTokenizer: the vocabulary must hold 1 to 2^31 - 2 tokens");
  if (scores_.size() != n)
    throw std::invalid_argument("SpmTokenizer: " + std::to_string(scores_.size()) + " scores for " +
                                std::to_string(n) + " tokens");
  if (offsets_.size() != n + 1 || offsets_[0] != 0 || offsets_[n] != blob_.size())
    throw std::invalid_argument("SpmTokenizer: token offsets do not describe the token bytes");
  for (size_t i = 0; i < n; ++i)
    if (offsets_[i + 1] < offsets_[i]) throw std::invalid_argument("SpmTokenizer: token offsets decrease");
  for (int32_t id : {options_.bos_id, options_.eos_id, options_.unk_id})
    if (id < -1 || id >= static_cast<int32_t>(n))
      throw std::invalid_argument("SpmTokenizer: special token id " + std::to_string(id) + " is outside the vocabulary");
  if ((options_.add_bos && options_.bos_id < 0) || (options_.add_eos && options_.eos_id < 0))
    throw std::invalid_argument("SpmTokenizer: add_bos/add_eos without a bos/eos id");
  const std::vector<int32_t> first = build_index();
  build_merge_ranks(first);
  build_atomic_trie(first);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_ids_[b] = find(name);
  }
  byte_fallback_ = std::find(types_.begin(), types_.end(), kTokenByte) != types_.end();
  unk_symbol_ = options_.unk_id < 0 ? -1 : find(token(options_.unk_id));
}

std::vector<int32_t> SpmTokenizer::build_index() {
  std::vector<int32_t> first(types_.size());
  uint64_t capacity = 16;
  while (capacity < 2 * types_.size()) capacity *= 2;
  slots_.assign(capacity, -1);
  slot_mask_ = capacity - 1;
  const std::hash<std::string_view> hash;
  for (int32_t id = 0; id < size(); ++id) {
    const std::string_view s = token(id);
    for (uint64_t h = hash(s) & slot_mask_;; h = (h + 1) & slot_mask_) {
      if (slots_[h] < 0) {
        slots_[h] = id;
        first[id] = id;
        break;
      }
      if (token(slots_[h]) == s) {  // spelled like an earlier id: text encodes to that one
        first[id] = slots_[h];
        break;
      }
    }
  }
  return first;
}

int32_t SpmTokenizer::find(std::string_view s) const {
  for (uint64_t h = std::hash<std::string_view>()(s) & slot_mask_;; h = (h + 1) & slot_mask_) {
    const int32_t id = slots_[h];
    if (id < 0 || token(id) == s) return id;
  }
}

void SpmTokenizer::build_merge_ranks(const std::vector<int32_t>& first_id) {
  // A string spelled by several normal tokens appears once per token in the
  // derived merge list, and the tokenizers BPE keeps the rank of the last
  // entry: the worst (score, id).
  merge_score_.assign(types_.size(), 0.0f);
  merge_id_.assign(types_.size(), -1);
  for (int32_t id = 0; id < size(); ++id) {
    if (types_[id] != kTokenNormal || count_chars(token(id)) < 2) continue;
    const int32_t first = first_id[id];
    const float s = scores_[id];
    if (merge_id_[first] < 0 || s < merge_score_[first] || (s == merge_score_[first] && id > merge_id_[first])) {
      merge_score_[first] = s;
      merge_id_[first] = id;
    }
  }
}

void SpmTokenizer::build_atomic_trie(const std::vector<int32_t>& first_id) {
  trie_.assign(1, TrieNode{});
  for (int32_t id = 0; id < size(); ++id) {
    const int32_t t = types_[id];
    if (t != kTokenControl && t != kTokenUnknown && t != kTokenUserDefined) continue;
    const std::string_view s = token(id);
    if (!s.empty()) insert_atomic(s, first_id[id], t != kTokenUserDefined);
  }
}

void SpmTokenizer::insert_atomic(std::string_view s, int32_t id, bool special) {
  int32_t node = 0;
  for (char c : s) {
    const auto byte = static_cast<uint8_t>(c);
    auto& edges = trie_[node].edges;
    auto it = std::lower_bound(edges.begin(), edges.end(), std::make_pair(byte, int32_t{-1}));
    if (it != edges.end() && it->first == byte) {
      node = it->second;
      continue;
    }
    const auto child = static_cast<int32_t>(trie_.size());
    edges.insert(it, {byte, child});
    trie_.emplace_back();  // invalidates `edges`; not used again in this step
    node = child;
  }
  trie_[node].token = id;
  trie_[node].special = trie_[node].special || special;  // special if any token so spelled is
}

SpmTokenizer::AtomicMatch SpmTokenizer::longest_atomic(std::string_view text, size_t pos) const {
  AtomicMatch best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& edges = trie_[node].edges;
    auto it = std::lower_bound(edges.begin(), edges.end(), std::make_pair(byte, int32_t{-1}));
    if (it == edges.end() || it->first != byte) break;
    node = it->second;
    if (trie_[node].token >= 0) best = {i + 1 - pos, trie_[node].token, trie_[node].special};
  }
  return best;
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text, bool add_special_tokens, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special_tokens && options_.add_bos) out.push_back(options_.bos_id);
  size_t start = 0, pos = 0;
  while (pos < text.size()) {
    const AtomicMatch m = longest_atomic(text, pos);
    if (m.length == 0) {
      ++pos;
    } else if (m.special && !parse_special) {
      pos += m.length;  // consumed as text: nothing inside it can match either
    } else {
      encode_stretch(text.substr(start, pos - start), out);
      out.push_back(m.token);
      pos += m.length;
      start = pos;
    }
  }
  encode_stretch(text.substr(start), out);
  if (add_special_tokens && options_.add_eos) out.push_back(options_.eos_id);
  return out;
}

void SpmTokenizer::encode_stretch(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string norm;
  norm.reserve(text.size() + 3 * 8);
  if (options_.add_space_prefix) norm += kSpace;
  for (char c : text) {
    if (c == ' ')
      norm += kSpace;
    else
      norm += c;
  }

  std::vector<Symbol> syms;
  syms.reserve(norm.size());
  auto add = [&syms](int32_t id) {
    const auto i = static_cast<int32_t>(syms.size());
    syms.push_back({id, i - 1, -1});
    if (i > 0) syms[i - 1].next = i;
  };
  bool pending_unk = false;  // runs of unknown characters fuse into one unknown token
  for (size_t i = 0; i < norm.size();) {
    const size_t len = std::min(utf8_length(static_cast<uint8_t>(norm[i])), norm.size() - i);
    const std::string_view ch(norm.data() + i, len);
    i += len;
    if (const int32_t id = find(ch); id >= 0) {
      if (pending_unk) add(unk_symbol_);
      pending_unk = false;
      add(id);
      continue;
    }
    if (byte_fallback_ &&
        std::all_of(ch.begin(), ch.end(), [this](char b) { return byte_ids_[static_cast<uint8_t>(b)] >= 0; })) {
      // as tokenizers does: bytes do not end a pending run of unknowns
      for (char b : ch) add(byte_ids_[static_cast<uint8_t>(b)]);
      continue;
    }
    if (unk_symbol_ >= 0) pending_unk = true;
  }
  if (pending_unk) add(unk_symbol_);

  std::vector<PairRank> heap;
  std::string pair;
  auto push_pair = [&](int32_t left_pos) {
    if (left_pos < 0) return;
    const int32_t right_pos = syms[left_pos].next;
    if (right_pos < 0) return;
    const int32_t l = syms[left_pos].id, r = syms[right_pos].id;
    const std::string_view ls = token(l), rs = token(r);
    if (ls.empty() || rs.empty()) return;  // merges split a token into two non-empty halves
    pair.assign(ls);
    pair.append(rs);
    const int32_t merged = find(pair);
    if (merged < 0 || merge_id_[merged] < 0) return;
    heap.push_back({merge_score_[merged], merge_id_[merged], l, r, left_pos, merged});
    std::push_heap(heap.begin(), heap.end(), PairRank::later);
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push_pair(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), PairRank::later);
    const PairRank top = heap.back();
    heap.pop_back();
    Symbol& left = syms[top.pos];
    // Stale entry: either side has merged since (a merge only lengthens a
    // symbol, so unchanged ids mean an unchanged pair).
    if (left.id != top.left || left.next < 0 || syms[left.next].id != top.right) continue;
    Symbol& right = syms[left.next];
    left.id = top.merged;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    right.id = -1;
    push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : syms)
    if (s.id >= 0) out.push_back(s.id);
}

std::string SpmTokenizer::piece(int32_t id) const {
  const std::string_view s = token(id);
  const int32_t t = types_[id];
  if (t == kTokenByte) {
    if (const int b = byte_token_value(s); b >= 0) return std::string(1, static_cast<char>(b));
  }
  if (t != kTokenNormal && t != kTokenByte) return std::string(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s.substr(i, kSpace.size()) == kSpace) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace tinyfast::core
