"""GGUF model files: memory-mapped, parsed natively, tensors handed out without copies.

``GGUFFile(path)`` maps the file read-only and runs the C++ parser
(``csrc/core/gguf_parser.cpp``) over a NumPy view of the mapping, so opening a
file reads only its header and metadata. Tensor data stays in the page cache
until a kernel touches it:

- ``tensor_bytes(name)``: a read-only uint8 view of the tensor's bytes;
- ``tensor_array(name)``: F32/F16/F64/integer tensors as NumPy views in the
  logical row-major shape (BF16 is widened to float32, NumPy having no
  bfloat16), or with ``backend="mlx"`` as MLX arrays over the mapping (BF16
  included); quantized tensors as a :class:`QuantizedTensor` (raw blocks plus
  their format name), never dequantized at load time;
- ``model_config()``: the hyperparameters of a llama / qwen2 / qwen3 / gemma3 model.

Malformed files raise :class:`ModelFormatError` (a ``ValueError``) whose message
names the problem and, when it has one, the byte offset (also in ``.offset``).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyfast import _C
from tinyfast._C import ModelFormatError

__all__ = [
    "GGUFFile",
    "GGUFTensorInfo",
    "ModelConfig",
    "ModelFormatError",
    "QuantizedTensor",
    "RopeScaling",
    "SUPPORTED_ARCHITECTURES",
]

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")

# ggml types stored as plain scalars, by the dtype name NumPy / MLX use.
_PLAIN_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "bf16": "bfloat16",
    "f64": "float64",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
}

# llama.cpp's defaults where a key is optional.
_DEFAULT_ROPE_THETA = 10000.0
_GEMMA3_SLIDING_WINDOW_PATTERN = 6  # every 6th layer attends globally
_GEMMA3_LOCAL_ROPE_THETA = 10000.0  # rope base of the sliding-window layers


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]
    """GGUF (ggml) order: ``shape[0]`` is the contiguous dimension (ggml ``ne[0]``)."""
    logical_shape: tuple[int, ...]
    """Row-major shape, ``shape`` reversed: a 2-D weight is ``[rows, cols]`` = ``[out, in]``."""
    type: int
    """ggml type id (0 = F32, 12 = Q4_K, ...)."""
    type_name: str
    """Lowercase ggml type name, as in ``csrc/core/quant_blocks.h``: ``"f32"``, ``"q4_k"``..."""
    n_elements: int
    n_bytes: int
    offset: int
    """Absolute byte offset of the data in the file."""
    block_size: int
    """Elements per block (1 for plain types)."""
    type_size: int
    """Bytes per block."""

    @property
    def is_quantized(self) -> bool:
        return self.type_name not in _PLAIN_DTYPES

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (``shape[0]`` elements); blocks never straddle rows."""
        return self.shape[0] // self.block_size * self.type_size


@dataclass(frozen=True)
class QuantizedTensor:
    """A block-quantized tensor as stored: ``data`` is uint8 ``[rows, row_bytes]``
    (rows = product of ``logical_shape[:-1]``), a view of the file mapping."""

    name: str
    format: str
    shape: tuple[int, ...]
    logical_shape: tuple[int, ...]
    data: Any  # np.ndarray or mx.array


@dataclass(frozen=True)
class RopeScaling:
    type: str
    """``"linear"``, ``"yarn"``, ... (``rope.scaling.type``)."""
    factor: float
    original_context_length: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    """Query/key head size (``attention.key_length``, else hidden // n_heads)."""
    v_head_dim: int
    """Value head size (``attention.value_length``, else head_dim)."""
    vocab_size: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope_dim: int
    """Rotated dimensions per head (``rope.dimension_count``, else head_dim)."""
    rope_scaling: RopeScaling | None
    tie_word_embeddings: bool
    """True when the file has no ``output.weight``: logits use ``token_embd.weight``."""
    sliding_window: int | None
    sliding_window_pattern: int | None
    """Gemma 3: every ``pattern``-th layer is global, the others use the sliding window."""
    sliding_layers: tuple[bool, ...]
    """Per layer: True where attention is limited to ``sliding_window`` tokens."""
    rope_local_theta: float | None
    """Rope base of the sliding-window layers (Gemma 3: ``rope.freq_base_swa``, else 10000)."""


class GGUFFile:
    """A parsed GGUF file whose tensor data stays memory-mapped."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # mmap refuses empty files; the parser reports them as truncated.
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        buf = np.frombuffer(self._mmap, dtype=np.uint8) if self._mmap is not None else np.empty(0, np.uint8)
        try:
            self._load(buf)
        except BaseException:
            del buf
            self.close()
            raise

    @classmethod
    def from_buffer(cls, data) -> GGUFFile:
        """Parses an in-memory GGUF image (bytes, bytearray, memoryview, uint8 array)."""
        self = cls.__new__(cls)
        self.path = None
        self._mmap = None
        self._load(np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1))
        return self

    def _load(self, buf: np.ndarray) -> None:
        if buf.dtype != np.uint8:
            raise TypeError("GGUF data must be bytes-like or a uint8 array")
        parsed = _C.gguf_parse(buf)
        self._buf = buf
        self.version: int = parsed["version"]
        self.alignment: int = parsed["alignment"]
        self.data_offset: int = parsed["data_offset"]
        self.metadata: dict[str, Any] = parsed["metadata"]
        """Key -> value in file order: int / float / bool / str; arrays of numbers as NumPy
        arrays, of strings as lists of str (invalid UTF-8 decoded with surrogateescape)."""
        self.metadata_types: dict[str, str] = parsed["metadata_types"]
        """Key -> GGUF value type: ``"uint32"``, ``"array[string]"``..."""
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, shape, type_id, type_name, n_elements, n_bytes, offset, block, type_size in parsed["tensors"]:
            self.tensors[name] = GGUFTensorInfo(
                name=name,
                shape=shape,
                logical_shape=shape[::-1],
                type=type_id,
                type_name=type_name,
                n_elements=n_elements,
                n_bytes=n_bytes,
                offset=offset,
                block_size=block,
                type_size=type_size,
            )

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Drops the mapping. Views handed out keep it alive until they are gone."""
        self._buf = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # exported views remain; the mapping is released with the last one
            self._mmap = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        arch = self.metadata.get("general.architecture", "?") if hasattr(self, "metadata") else "?"
        n = len(self.tensors) if hasattr(self, "tensors") else 0
        return f"GGUFFile({self.path!r}, v{getattr(self, 'version', '?')}, {arch}, {n} tensors)"

    # -- tensors ------------------------------------------------------------------

    def _info(self, name: str) -> GGUFTensorInfo:
        if self._buf is None:
            raise ValueError("GGUFFile is closed")
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.path or 'GGUF image'}") from None

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the mapping (no copy)."""
        info = self._info(name)
        return self._buf[info.offset : info.offset + info.n_bytes]

    def tensor_array(self, name: str, *, backend: str = "numpy"):
        """The tensor's data without a load-time conversion.

        Plain types (f32, f16, bf16, f64, i8..i64) come back in the logical row-major shape:
        ``backend="numpy"`` gives a read-only view (bf16 is widened to a float32 copy);
        ``backend="mlx"`` gives an ``mx.array`` over the mapping (no copy on the CPU).
        Quantized types come back as :class:`QuantizedTensor` with uint8 ``[rows, row_bytes]``
        data (a NumPy view, or an ``mx.array`` over the mapping with ``backend="mlx"``).
        """
        if backend not in ("numpy", "mlx"):
            raise ValueError(f"backend must be 'numpy' or 'mlx', not {backend!r}")
        info = self._info(name)
        raw = self.tensor_bytes(name)
        dtype = _PLAIN_DTYPES.get(info.type_name)
        if dtype is None:
            rows = info.n_elements // info.shape[0]
            if backend == "mlx":
                data = _C.gguf_mlx_view(raw, [rows, info.row_bytes], "uint8")
            else:
                data = raw.reshape(rows, info.row_bytes)
            return QuantizedTensor(name, info.type_name, info.shape, info.logical_shape, data)
        if backend == "mlx":
            return _C.gguf_mlx_view(raw, list(info.logical_shape), dtype)
        if dtype == "bfloat16":
            widened = raw.view(np.uint16).astype(np.uint32) << 16
            return widened.view(np.float32).reshape(info.logical_shape)
        return raw.view(np.dtype(dtype)).reshape(info.logical_shape)

    # -- model hyperparameters ----------------------------------------------------

    def model_config(self) -> ModelConfig:
        """The model's hyperparameters from the metadata (llama, qwen2, qwen3, gemma3).

        Raises ModelFormatError naming the key when a required one is missing or unusable.
        """
        return model_config_from(self.metadata, self.tensors)


class _Keys:
    """Typed reads of ``<arch>.*`` metadata with errors that name the key."""

    _REQUIRED = object()

    def __init__(self, metadata: Mapping[str, Any], arch: str):
        self.metadata = metadata
        self.arch = arch

    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    def _raw(self, suffix: str, default):
        key = self.key(suffix)
        if key not in self.metadata:
            if default is self._REQUIRED:
                raise ModelFormatError(f"GGUF: missing required key {key!r}")
            return key, None
        return key, self.metadata[key]

    def get_int(self, suffix: str, default=_REQUIRED, *, minimum: int = 1):
        key, v = self._raw(suffix, default)
        if v is None:
            return default
        if isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "iu":
            # Per-layer values: fine for tinyfast's architectures only when uniform.
            if v.size == 0 or not (v == v[0]).all():
                raise ModelFormatError(f"GGUF: key {key!r} varies per layer; tinyfast needs a single value")
            v = int(v[0])
        if isinstance(v, bool) or not isinstance(v, int):
            raise ModelFormatError(f"GGUF: key {key!r} must be an integer, got {self.metadata_type(key)}")
        if v < minimum:
            raise ModelFormatError(f"GGUF: key {key!r} = {v} must be at least {minimum}")
        return v

    def get_float(self, suffix: str, default=_REQUIRED):
        key, v = self._raw(suffix, default)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelFormatError(f"GGUF: key {key!r} must be a number, got {self.metadata_type(key)}")
        return float(v)

    def get_str(self, suffix: str, default=_REQUIRED):
        key, v = self._raw(suffix, default)
        if v is None:
            return default
        if not isinstance(v, str):
            raise ModelFormatError(f"GGUF: key {key!r} must be a string, got {self.metadata_type(key)}")
        return v

    def metadata_type(self, key: str) -> str:
        return type(self.metadata[key]).__name__


def model_config_from(metadata: Mapping[str, Any], tensors: Mapping[str, GGUFTensorInfo]) -> ModelConfig:
    arch = metadata.get("general.architecture")
    if arch is None:
        raise ModelFormatError("GGUF: missing required key 'general.architecture'")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelFormatError(
            f"GGUF: unsupported architecture {arch!r} (tinyfast reads {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    k = _Keys(metadata, arch)
    n_layers = k.get_int("block_count")
    hidden = k.get_int("embedding_length")
    n_heads = k.get_int("attention.head_count")
    n_kv_heads = k.get_int("attention.head_count_kv", n_heads)
    if n_heads % n_kv_heads:
        raise ModelFormatError(
            f"GGUF: {k.key('attention.head_count')} = {n_heads} is not a multiple of "
            f"{k.key('attention.head_count_kv')} = {n_kv_heads}"
        )
    head_dim = k.get_int("attention.key_length", None)
    if head_dim is None:
        if hidden % n_heads:
            raise ModelFormatError(
                f"GGUF: {k.key('embedding_length')} = {hidden} is not a multiple of "
                f"{k.key('attention.head_count')} = {n_heads} and {k.key('attention.key_length')} is missing"
            )
        head_dim = hidden // n_heads

    vocab_size = k.get_int("vocab_size", None)
    if vocab_size is None:
        tokens = metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list) and tokens:
            vocab_size = len(tokens)
        elif "token_embd.weight" in tensors:
            vocab_size = tensors["token_embd.weight"].logical_shape[0]
        else:
            raise ModelFormatError(
                f"GGUF: missing required key 'tokenizer.ggml.tokens' (or {k.key('vocab_size')}) for the vocabulary size"
            )

    rope_scaling = None
    scaling_type = k.get_str("rope.scaling.type", None)
    if scaling_type is not None and scaling_type != "none":
        factor = k.get_float("rope.scaling.factor", 1.0)
        original = k.get_int("rope.scaling.original_context_length", None)
        rope_scaling = RopeScaling(scaling_type, factor, original)
    elif scaling_type is None and k.key("rope.scale_linear") in metadata:
        rope_scaling = RopeScaling("linear", k.get_float("rope.scale_linear"))

    sliding_window = k.get_int("attention.sliding_window", None if arch != "gemma3" else k._REQUIRED, minimum=0)
    sliding_window = sliding_window or None  # 0 means no window
    pattern = None
    rope_local_theta = None
    if arch == "gemma3":
        rope_local_theta = k.get_float("rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_THETA)
        sliding_layers, pattern = _gemma3_sliding_layers(metadata, k, n_layers)
        if sliding_window is None:
            sliding_layers = (False,) * n_layers
    else:
        sliding_layers = (sliding_window is not None,) * n_layers

    return ModelConfig(
        architecture=arch,
        n_layers=n_layers,
        hidden=hidden,
        intermediate=k.get_int("feed_forward_length"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        v_head_dim=k.get_int("attention.value_length", head_dim),
        vocab_size=vocab_size,
        context_length=k.get_int("context_length"),
        rms_norm_eps=k.get_float("attention.layer_norm_rms_epsilon"),
        rope_theta=k.get_float("rope.freq_base", _DEFAULT_ROPE_THETA),
        rope_dim=k.get_int("rope.dimension_count", head_dim),
        rope_scaling=rope_scaling,
        tie_word_embeddings="output.weight" not in tensors,
        sliding_window=sliding_window,
        sliding_window_pattern=pattern,
        sliding_layers=sliding_layers,
        rope_local_theta=rope_local_theta,
    )


def _gemma3_sliding_layers(metadata, k: _Keys, n_layers: int) -> tuple[tuple[bool, ...], int | None]:
    key = k.key("attention.sliding_window_pattern")
    value = metadata.get(key)
    if value is None:
        value = _GEMMA3_SLIDING_WINDOW_PATTERN
    if isinstance(value, np.ndarray) and value.dtype == np.bool_:
        if value.shape != (n_layers,):
            raise ModelFormatError(
                f"GGUF: key {key!r} has {value.size} per-layer entries but the model has {n_layers} layers"
            )
        return tuple(bool(x) for x in value), None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelFormatError(f"GGUF: key {key!r} must be a positive integer or an array of bools")
    # Layer i is global when (i + 1) % pattern == 0 (llama.cpp's set_swa_pattern).
    return tuple((i + 1) % value != 0 for i in range(n_layers)), value
