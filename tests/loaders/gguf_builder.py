"""A tiny GGUF writer for tests: writes exactly what it is told, valid or not.

Values are given with their GGUF type so tests can write wrong types on purpose:

    b = GGUFBuilder(alignment=32)
    b.kv("general.architecture", STRING, "llama")
    b.kv("llama.block_count", UINT32, 2)
    b.kv("tokenizer.ggml.tokens", ARRAY, (STRING, ["<s>", "a"]))
    b.kv("nested", ARRAY, (ARRAY, [(UINT8, [1, 2]), (UINT8, [])]))
    b.tensor("w", dims=[32, 2], ggml_type=Q8_0)          # GGUF order: dims[0] is contiguous
    data = b.build()

Independent of tinyfast's parser on purpose (its own type tables); the tests check
that the `gguf` package's GGUFReader reads its valid output.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# GGUF metadata value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)

_SCALAR_FMT = {
    UINT8: "<B",
    INT8: "<b",
    UINT16: "<H",
    INT16: "<h",
    UINT32: "<I",
    INT32: "<i",
    FLOAT32: "<f",
    BOOL: "<B",  # written as given, so 2 can be written on purpose
    UINT64: "<Q",
    INT64: "<q",
    FLOAT64: "<d",
}

# ggml tensor types used by the tests: id -> (elements per block, bytes per block)
F32, F16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K, I8, I32, BF16 = 0, 1, 2, 6, 8, 12, 14, 24, 26, 30
GGML_BLOCKS = {
    F32: (1, 4),
    F16: (1, 2),
    Q4_0: (32, 18),
    Q5_0: (32, 22),
    Q8_0: (32, 34),
    Q4_K: (256, 144),
    Q6_K: (256, 210),
    I8: (1, 1),
    I32: (1, 4),
    BF16: (1, 2),
}


_PATTERN = bytes((i * 7 + 3) & 0xFF for i in range(256))


def encode_string(s: str | bytes) -> bytes:
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def encode_value(vtype: int, value) -> bytes:
    if vtype == STRING:
        return encode_string(value)
    if vtype == ARRAY:
        elem_type, items = value
        out = [struct.pack("<IQ", elem_type, len(items))]
        if elem_type in _SCALAR_FMT:
            fmt = _SCALAR_FMT[elem_type]
            out.extend(struct.pack(fmt, x) for x in items)
        else:
            out.extend(encode_value(elem_type, x) for x in items)
        return b"".join(out)
    return struct.pack(_SCALAR_FMT[vtype], value)


def tensor_nbytes(dims, ggml_type: int) -> int:
    block, size = GGML_BLOCKS[ggml_type]
    n = 1
    for d in dims:
        n *= d
    return n // block * size


@dataclass
class _Tensor:
    name: str | bytes
    dims: list[int]
    ggml_type: int
    data: bytes | None
    offset: int | None
    n_dims: int | None


@dataclass
class GGUFBuilder:
    version: int = 3
    magic: bytes = b"GGUF"
    alignment: int = 32  # used for layout; written as general.alignment only via kv()
    kvs: list[tuple[bytes, bytes]] = field(default_factory=list)
    tensors: list[_Tensor] = field(default_factory=list)

    def kv(self, key: str | bytes, vtype: int, value) -> GGUFBuilder:
        return self.kv_raw(key, struct.pack("<I", vtype) + encode_value(vtype, value))

    def kv_raw(self, key: str | bytes, type_and_value: bytes) -> GGUFBuilder:
        """A key followed by arbitrary bytes (for unknown types, bad payloads)."""
        self.kvs.append((encode_string(key), type_and_value))
        return self

    def tensor(self, name, dims, ggml_type: int = F32, *, data: bytes | None = None, offset: int | None = None,
               n_dims: int | None = None) -> GGUFBuilder:
        """A tensor; its data defaults to a byte pattern of the right size, placed at the next
        aligned offset. `offset` (relative to the data section) and `n_dims` override what is written."""
        self.tensors.append(_Tensor(name, list(dims), ggml_type, data, offset, n_dims))
        return self

    def build(self, *, tensor_count: int | None = None, kv_count: int | None = None, pad_data: bool = True) -> bytes:
        head = [
            self.magic,
            struct.pack("<I", self.version),
            struct.pack("<Q", len(self.tensors) if tensor_count is None else tensor_count),
            struct.pack("<Q", len(self.kvs) if kv_count is None else kv_count),
        ]
        for key, payload in self.kvs:
            head += [key, payload]

        # Lay out tensor data: auto offsets go after everything placed so far.
        placed: list[tuple[int, bytes]] = []
        cursor = 0
        infos = []
        for t in self.tensors:
            data = t.data
            if data is None:
                try:
                    n = tensor_nbytes(t.dims, t.ggml_type)
                except KeyError:
                    n = 0
                n = min(n, 1 << 20)  # absurd dims in malformed files: write a token amount
                data = (_PATTERN * (max(n, 0) // len(_PATTERN) + 1))[: max(n, 0)]
            if t.offset is None:
                offset = cursor
            else:
                offset = t.offset
            placed.append((offset, data))
            end = offset + len(data)
            cursor = max(cursor, (end + self.alignment - 1) // self.alignment * self.alignment)
            n_dims = len(t.dims) if t.n_dims is None else t.n_dims
            info = encode_string(t.name) + struct.pack("<I", n_dims)
            info += b"".join(struct.pack("<Q", d & 0xFFFFFFFFFFFFFFFF) for d in t.dims)
            info += struct.pack("<IQ", t.ggml_type & 0xFFFFFFFF, offset)
            infos.append(info)
        head += infos
        header = b"".join(head)
        # Padding to the data section only when there is one, so a file without
        # tensors ends exactly where its last field does (truncation cases rely on it).
        pad = (-len(header)) % self.alignment if self.tensors else 0
        out = bytearray(header + b"\0" * pad)
        in_file = [(off, d) for off, d in placed if off < (1 << 32)]  # others: out of file on purpose
        if in_file:
            size = max(off + len(d) for off, d in in_file)
            if pad_data:
                size = (size + self.alignment - 1) // self.alignment * self.alignment
            section = bytearray(size)
            for off, d in in_file:
                section[off : off + len(d)] = d
            out += section
        return bytes(out)


def small_model(*, alignment: int | None = 32, arch: str = "llama", extra: bool = True) -> GGUFBuilder:
    """A small valid llama-style file: every metadata value type, a nested array, a
    tokenizer, and tensors of several types (f32, f16, bf16, q8_0, q4_k)."""
    b = GGUFBuilder(alignment=alignment or 32)
    b.kv("general.architecture", STRING, arch)
    b.kv("general.name", STRING, "tiny test model")
    if alignment is not None:
        b.kv("general.alignment", UINT32, alignment)
    p = arch + "."
    b.kv(p + "block_count", UINT32, 2)
    b.kv(p + "context_length", UINT32, 128)
    b.kv(p + "embedding_length", UINT32, 8)
    b.kv(p + "feed_forward_length", UINT32, 16)
    b.kv(p + "attention.head_count", UINT32, 2)
    b.kv(p + "attention.head_count_kv", UINT32, 1)
    b.kv(p + "attention.layer_norm_rms_epsilon", FLOAT32, 1e-5)
    b.kv(p + "rope.freq_base", FLOAT32, 500000.0)
    b.kv("tokenizer.ggml.model", STRING, "llama")
    b.kv("tokenizer.ggml.tokens", ARRAY, (STRING, ["<unk>", "<s>", "</s>", "a", "b", "é"]))
    b.kv("tokenizer.ggml.scores", ARRAY, (FLOAT32, [0.0, 0.0, 0.0, -1.0, -2.0, -3.0]))
    b.kv("tokenizer.ggml.token_type", ARRAY, (INT32, [2, 3, 3, 1, 1, 1]))
    b.kv("tokenizer.ggml.bos_token_id", UINT32, 1)
    b.kv("tokenizer.ggml.add_bos_token", BOOL, 1)
    if extra:
        # One of every scalar type, and arrays beyond the tokenizer's.
        b.kv("test.u8", UINT8, 200)
        b.kv("test.i8", INT8, -100)
        b.kv("test.u16", UINT16, 60000)
        b.kv("test.i16", INT16, -30000)
        b.kv("test.i32", INT32, -2_000_000_000)
        b.kv("test.u64", UINT64, 2**63 + 5)
        b.kv("test.i64", INT64, -(2**62))
        b.kv("test.f64", FLOAT64, 3.25)
        b.kv("test.bools", ARRAY, (BOOL, [1, 0, 1]))
        b.kv("test.nested", ARRAY, (ARRAY, [(UINT8, [1, 2, 3]), (UINT8, []), (INT16, [-5])]))
        b.kv("test.empty", ARRAY, (STRING, []))
    b.tensor("token_embd.weight", [8, 6], F32)
    b.tensor("output_norm.weight", [8], F16)
    b.tensor("blk.0.attn_norm.weight", [8], BF16)
    b.tensor("blk.0.attn_q.weight", [32, 2], Q8_0)
    b.tensor("blk.0.ffn_down.weight", [256, 1], Q4_K)
    return b
