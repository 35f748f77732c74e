// tinyfast._C.SpmTokenizer: native SentencePiece-BPE encoding for GGUF "llama"
// vocabularies (see core/spm_tokenizer.h). Token strings arrive as the list of
// str the GGUF reader makes; scores and types as NumPy arrays.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/spm_tokenizer.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tinyfast::bindings {
namespace {

template <typename T>
using Vec1D = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// The UTF-8 of a str. `allow_surrogates`: GGUF token strings come decoded with
// surrogateescape, which turns back into the file's bytes here.
std::string_view utf8_of(nb::handle s, bool allow_surrogates, nb::object& keep) {
  if (!PyUnicode_Check(s.ptr()))
    throw nb::type_error(("expected str, not " + std::string(nb::type_name(s.type()).c_str())).c_str());
  Py_ssize_t size = 0;
  if (const char* data = PyUnicode_AsUTF8AndSize(s.ptr(), &size)) return {data, static_cast<size_t>(size)};
  if (!allow_surrogates) throw nb::python_error();
  PyErr_Clear();
  keep = nb::steal(PyUnicode_AsEncodedString(s.ptr(), "utf-8", "surrogateescape"));
  if (!keep.is_valid()) throw nb::python_error();
  char* data = nullptr;
  if (PyBytes_AsStringAndSize(keep.ptr(), &data, &size) != 0) throw nb::python_error();
  return {data, static_cast<size_t>(size)};
}

void copy_tokens(nb::list tokens, std::string& blob, std::vector<uint64_t>& offsets) {
  const size_t n = nb::len(tokens);
  offsets.reserve(n + 1);
  offsets.push_back(0);
  blob.reserve(n * 8);
  for (nb::handle t : tokens) {
    if (!PyUnicode_Check(t.ptr())) throw nb::type_error("SpmTokenizer: tokens must be str");
    // A temporary bytes object, not PyUnicode_AsUTF8AndSize: that would keep a
    // UTF-8 copy inside each of the 262k str objects for their lifetime (~8 MB).
    nb::object utf8 = nb::steal(PyUnicode_AsEncodedString(t.ptr(), "utf-8", "surrogateescape"));
    if (!utf8.is_valid()) throw nb::python_error();
    char* data = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_AsStringAndSize(utf8.ptr(), &data, &size) != 0) throw nb::python_error();
    blob.append(data, static_cast<size_t>(size));
    offsets.push_back(blob.size());
  }
}

// Builds in place (nanobind's __init__ protocol); the GIL is released for the
// index building, after the token strings are copied out.
void init(core::SpmTokenizer* self, nb::list tokens, Vec1D<float> scores, Vec1D<int32_t> types, int32_t bos_id,
          int32_t eos_id, int32_t unk_id, bool add_bos, bool add_eos, bool add_space_prefix) {
  std::string blob;
  std::vector<uint64_t> offsets;
  copy_tokens(tokens, blob, offsets);
  std::vector<float> s(scores.data(), scores.data() + scores.shape(0));
  std::vector<int32_t> k(types.data(), types.data() + types.shape(0));
  const core::SpmOptions options{bos_id, eos_id, unk_id, add_bos, add_eos, add_space_prefix};
  nb::gil_scoped_release unlocked;
  new (self) core::SpmTokenizer(std::move(blob), std::move(offsets), std::move(s), std::move(k), options);
}

std::vector<int32_t> encode(const core::SpmTokenizer& tok, nb::handle text, bool add_special_tokens,
                            bool parse_special) {
  nb::object keep;
  const std::string_view utf8 = utf8_of(text, false, keep);  // `text` (the caller's) holds the buffer
  nb::gil_scoped_release unlocked;
  return tok.encode(utf8, add_special_tokens, parse_special);
}

std::vector<std::vector<int32_t>> encode_batch(const core::SpmTokenizer& tok, nb::list texts, bool add_special_tokens,
                                               bool parse_special) {
  std::vector<std::string_view> views;
  std::vector<nb::object> keep(nb::len(texts));
  views.reserve(keep.size());
  for (size_t i = 0; i < keep.size(); ++i) {
    keep[i] = texts[i];  // a reference per text, should the list change later
    nb::object unused;
    views.push_back(utf8_of(keep[i], false, unused));
  }
  std::vector<std::vector<int32_t>> out(views.size());
  nb::gil_scoped_release unlocked;
  for (size_t i = 0; i < views.size(); ++i) out[i] = tok.encode(views[i], add_special_tokens, parse_special);
  return out;
}

// Decode pieces for every id as a list of bytes (TokenPieces.with_special).
nb::list pieces(const core::SpmTokenizer& tok) {
  nb::list out;
  for (int32_t id = 0; id < tok.size(); ++id) {
    const std::string p = tok.piece(id);
    out.append(nb::bytes(p.data(), p.size()));
  }
  return out;
}

nb::object token_to_id(const core::SpmTokenizer& tok, nb::handle token) {
  nb::object keep;
  const int32_t id = tok.find(utf8_of(token, true, keep));
  if (id < 0) return nb::none();
  return nb::int_(id);
}

}  // namespace

void bind_tokenizer(nb::module_& m) {
  nb::class_<core::SpmTokenizer>(m, "SpmTokenizer",
                                 "SentencePiece-BPE encoder for a GGUF 'llama' vocabulary; immutable, thread-safe.")
      .def("__init__", &init,
           "tokens"_a, "scores"_a, "types"_a, "bos_id"_a = -1, "eos_id"_a = -1, "unk_id"_a = -1, "add_bos"_a = false,
           "add_eos"_a = false, "add_space_prefix"_a = true,
           "tokens: list[str]; scores: float32[n]; types: int32[n] (llama.cpp token types); ids -1 for none.")
      .def("encode", &encode, "text"_a, "add_special_tokens"_a = true, "parse_special"_a = true,
           "Token ids of `text` (the GIL is released meanwhile).")
      .def("encode_batch", &encode_batch, "texts"_a, "add_special_tokens"_a = true, "parse_special"_a = true)
      .def("token_to_id", &token_to_id, "token"_a, "The first id spelled `token`, or None.")
      .def("pieces", &pieces, "The bytes each token id decodes to, as a list.")
      .def_prop_ro("vocab_size", &core::SpmTokenizer::size);
}

}  // namespace tinyfast::bindings
