// GGUF parsing for tinyfast.loaders: the parser runs over a NumPy view of the
// caller's mmap (no copy), and tensor data can be wrapped as MLX arrays that
// point into that mapping.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <mlx/allocator.h>
#include <mlx/array.h>
#include <mlx/backend/metal/metal.h>

#include <cstring>
#include <string>
#include <vector>

#include "bindings/numpy_out.h"
#include "core/errors.h"
#include "core/gguf_parser.h"

namespace nb = nanobind;
namespace mx = mlx::core;
using namespace nb::literals;

namespace tinyfast::bindings {
namespace {

namespace gguf = core::gguf;
using gguf::ValueType;
using Bytes = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Metadata strings are UTF-8 by the spec, but a file is not trusted to obey:
// surrogateescape keeps any bytes round-trippable (s.encode("utf-8",
// "surrogateescape")) instead of failing the whole load over one token.
nb::object decode(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
  if (!o) throw nb::python_error();
  return nb::steal(o);
}

template <typename T>
nb::object numpy_of(const std::vector<uint8_t>& raw) {
  std::vector<T> v(raw.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), raw.data(), raw.size());
  return nb::cast(to_numpy(std::move(v)));
}

nb::object numeric_array(ValueType t, const std::vector<uint8_t>& raw) {
  switch (t) {
    case ValueType::Uint8: return numpy_of<uint8_t>(raw);
    case ValueType::Int8: return numpy_of<int8_t>(raw);
    case ValueType::Uint16: return numpy_of<uint16_t>(raw);
    case ValueType::Int16: return numpy_of<int16_t>(raw);
    case ValueType::Uint32: return numpy_of<uint32_t>(raw);
    case ValueType::Int32: return numpy_of<int32_t>(raw);
    case ValueType::Uint64: return numpy_of<uint64_t>(raw);
    case ValueType::Int64: return numpy_of<int64_t>(raw);
    case ValueType::Float32: return numpy_of<float>(raw);
    case ValueType::Float64: return numpy_of<double>(raw);
    case ValueType::Bool:  // bytes were checked to be 0/1; std::vector<bool> has no data()
      return numpy_of<uint8_t>(raw).attr("view")(nb::module_::import_("numpy").attr("bool_"));
    default: throw core::InvariantError("numeric_array: not a fixed-size type");
  }
}

// Scalars become int/float/bool/str; arrays of numbers NumPy arrays (one byte
// of Python per byte of file, where a list of ints would cost ~36x); arrays of
// strings lists of str; nested arrays lists of those.
nb::object to_python(const gguf::Value& v) {
  switch (v.type) {
    case ValueType::Uint8: case ValueType::Uint16: case ValueType::Uint32: case ValueType::Uint64:
      return nb::int_(v.u);
    case ValueType::Int8: case ValueType::Int16: case ValueType::Int32: case ValueType::Int64:
      return nb::int_(v.i);
    case ValueType::Float32: case ValueType::Float64:
      return nb::float_(v.f);
    case ValueType::Bool:
      return nb::bool_(v.u != 0);
    case ValueType::String:
      return decode(v.str);
    case ValueType::Array:
      break;
  }
  if (v.elem_type == ValueType::String) {
    nb::list out;
    for (const std::string& s : v.strings) out.append(decode(s));
    return out;
  }
  if (v.elem_type == ValueType::Array) {
    nb::list out;
    for (const gguf::Value& item : v.items) out.append(to_python(item));
    return out;
  }
  return numeric_array(v.elem_type, v.raw);
}

nb::dict parse(Bytes data) {
  gguf::File f;
  {
    nb::gil_scoped_release unlocked;  // `data` keeps the buffer alive meanwhile
    f = gguf::parse(data.data(), data.size());
  }
  nb::dict metadata, types;
  for (const gguf::KeyValue& kv : f.metadata) {
    nb::object key = decode(kv.key);
    metadata[key] = to_python(kv.value);
    types[key] = kv.value.type_string();
  }
  nb::list tensors;
  for (const gguf::TensorInfo& t : f.tensors) {
    const gguf::TypeTraits* tt = gguf::ggml_type_traits(t.type);
    nb::list shape;
    for (uint64_t d : t.shape) shape.append(nb::int_(d));
    tensors.append(nb::make_tuple(decode(t.name), nb::tuple(shape), t.type, tt->name, t.n_elements, t.n_bytes,
                                  t.offset, tt->block_elems, tt->block_bytes));
  }
  nb::dict out;
  out["version"] = f.version;
  out["alignment"] = f.alignment;
  out["data_offset"] = f.data_offset;
  out["metadata"] = metadata;
  out["metadata_types"] = types;
  out["tensors"] = tensors;
  return out;
}

mx::Dtype dtype_named(const std::string& name) {
  if (name == "float32") return mx::float32;
  if (name == "float16") return mx::float16;
  if (name == "bfloat16") return mx::bfloat16;
  if (name == "float64") return mx::float64;
  if (name == "int8") return mx::int8;
  if (name == "int16") return mx::int16;
  if (name == "int32") return mx::int32;
  if (name == "int64") return mx::int64;
  if (name == "uint8") return mx::uint8;
  throw nb::value_error(("unsupported dtype for an MLX view: " + name).c_str());
}

// MLX's CPU-only allocator (backend/no_gpu) stores each block's size in a
// header word in front of the data and has no make_buffer, so
// mx::array(void*, ..., deleter) always copies there.  A Buffer pointing one
// header word before our data has raw_ptr() == data (pointer arithmetic only).
// The header itself is read only by allocator().size() from free(), and MLX
// never frees a Data that carries a deleter.  Probed once on a real MLX buffer,
// so any other allocator (Metal, CUDA, a future layout) takes the copying path.
bool cpu_allocator_has_size_header() {
  static const bool yes = [] {
    if (mx::metal::is_available()) return false;
    try {
      mx::allocator::Buffer b = mx::allocator::allocator().malloc(16);
      if (!b.ptr()) return false;
      const bool header = b.raw_ptr() == static_cast<char*>(b.ptr()) + sizeof(size_t);
      mx::allocator::allocator().free(b);
      return header;
    } catch (const std::exception&) {
      return false;
    }
  }();
  return yes;
}

// An mx.array over `buffer`'s memory: in place on the CPU (see above), else
// MLX's no-copy path (Metal, page-aligned memory) or a copy.  Memory MLX does
// not own is never donated to an op's output, so the read-only mapping is never
// written.  The array keeps `buffer` (and through it the mmap) alive; MLX may
// drop it on any thread, hence the GIL in the release.
mx::array mlx_view(nb::object buffer, const std::vector<int64_t>& shape, const std::string& dtype_name) {
  Bytes bytes = nb::cast<Bytes>(buffer);
  const mx::Dtype dtype = dtype_named(dtype_name);
  mx::Shape mx_shape;
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || d > INT32_MAX) throw nb::value_error("mlx_view: each dimension must be in [0, 2^31)");
    mx_shape.push_back(static_cast<int32_t>(d));
    n *= static_cast<uint64_t>(d);
  }
  if (n * dtype.size() != bytes.size())
    throw nb::value_error(("mlx_view: " + std::to_string(bytes.size()) + " bytes do not hold " + std::to_string(n) +
                           " " + dtype_name + " elements").c_str());
  auto* data = const_cast<uint8_t*>(bytes.data());
  PyObject* owner = buffer.ptr();
  Py_INCREF(owner);
  auto release = [owner] {
    if (!Py_IsInitialized()) return;  // interpreter gone: the mapping goes with the process
    PyGILState_STATE s = PyGILState_Ensure();
    Py_DECREF(owner);
    PyGILState_Release(s);
  };
  const bool aligned = reinterpret_cast<uintptr_t>(data) % dtype.size() == 0;
  if (n > 0 && aligned && cpu_allocator_has_size_header()) {
    mx::allocator::Buffer in_place(data - sizeof(size_t));
    return mx::array(mx::allocator::Data(in_place, [release](mx::allocator::Buffer) { release(); }),
                     std::move(mx_shape), dtype);
  }
  return mx::array(data, std::move(mx_shape), dtype, [release](void*) { release(); });
}

void bind_error(nb::module_& m) {
  // Created by hand (not nb::exception) so instances carry `.offset`.
  PyObject* cls = PyErr_NewExceptionWithDoc(
      "tinyfast.loaders.ModelFormatError",
      "A model file is malformed or unsupported. `offset` is the byte of the file where the\n"
      "problem was found, or None.",
      PyExc_ValueError, nullptr);
  if (!cls) throw nb::python_error();
  nb::object type = nb::steal(cls);
  type.attr("offset") = nb::none();
  m.attr("ModelFormatError") = type;
  nb::register_exception_translator(
      [](const std::exception_ptr& p, void* payload) {
        try {
          std::rethrow_exception(p);
        } catch (const core::ModelFormatError& e) {
          nb::handle cls(static_cast<PyObject*>(payload));
          // Messages quote names from the file, which need not be valid UTF-8.
          const std::string what = e.what();
          PyObject* msg = PyUnicode_DecodeUTF8(what.data(), static_cast<Py_ssize_t>(what.size()), "backslashreplace");
          if (!msg) return;  // the decode error is already set
          nb::object exc = cls(nb::steal(msg));
          if (e.offset != core::ModelFormatError::kNoOffset) exc.attr("offset") = nb::int_(e.offset);
          PyErr_SetObject(cls.ptr(), exc.ptr());
        }
      },
      type.inc_ref().ptr());  // the module holds it; the extra ref keeps the translator's copy valid
}

}  // namespace

void bind_gguf(nb::module_& m) {
  bind_error(m);
  m.def("gguf_parse", &parse, "data"_a,
        "Parses the GGUF image in a 1-D uint8 buffer (e.g. a NumPy view of an mmap) without\n"
        "copying it. Returns {version, alignment, data_offset, metadata, metadata_types, tensors};\n"
        "each tensor is (name, shape in GGUF order, ggml type id, type name, n_elements, n_bytes,\n"
        "absolute offset, block elements, block bytes). Raises ModelFormatError.");
  m.def("gguf_ggml_types", [] {
    nb::list out;
    for (const auto& t : core::gguf::ggml_types())
      out.append(nb::make_tuple(t.id, t.name, t.block_elems, t.block_bytes));
    return out;
  }, "The ggml tensor types the parser knows: (id, name, block elements, block bytes).");
  m.def("gguf_mlx_view", &mlx_view, "buffer"_a, "shape"_a, "dtype"_a,
        "An mx.array over a contiguous uint8 buffer's memory (no copy on the CPU); it keeps the\n"
        "buffer alive.");
}

}  // namespace tinyfast::bindings
