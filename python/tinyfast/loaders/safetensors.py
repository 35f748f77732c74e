"""HuggingFace checkpoint directories: safetensors files memory-mapped, config.json read.

``SafetensorsDir(path)`` maps every ``*.safetensors`` file read-only and parses
the headers itself (8-byte length + JSON), so opening reads no tensor data.
``array(name)`` is an ``mx.array`` over the mapping (no copy on the CPU, the
same allocator trick as GGUF tensors); ``weights()`` groups mlx-community's
affine triples (``x.weight`` uint32 codes + ``x.scales`` + ``x.biases``) into
:class:`tinyfast.ops.QuantizedWeight`.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from tinyfast import _C
from tinyfast.loaders.gguf import ModelFormatError

__all__ = ["SafetensorsDir", "SafetensorsTensorInfo", "read_config"]

# safetensors dtype -> MLX dtype name (as _C.gguf_mlx_view takes it)
_DTYPES = {
    "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
    "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8",
}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "U8": 1, "U32": 4,
             "BOOL": 1}
_MAX_HEADER = 100 << 20  # the reference implementation's own limit


@dataclass(frozen=True)
class SafetensorsTensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    begin: int
    """Absolute byte offset in the file."""
    end: int


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path) / "config.json"
    if not p.is_file():
        raise ModelFormatError(f"{path}: no config.json (not a HuggingFace checkpoint directory)")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


class SafetensorsDir:
    """All ``*.safetensors`` files of a checkpoint directory, memory-mapped."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise ModelFormatError(f"{self.path}: no *.safetensors files")
        self.tensors: dict[str, SafetensorsTensorInfo] = {}
        self._maps: dict[str, np.ndarray] = {}
        self.metadata: dict[str, str] = {}
        for f in files:
            self._open(f)

    def _open(self, file: Path) -> None:
        with open(file, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ModelFormatError(f"{file}: truncated safetensors file ({size} bytes)")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        buf = np.frombuffer(mm, dtype=np.uint8)
        (n,) = struct.unpack("<Q", bytes(buf[:8]))
        if n > _MAX_HEADER or 8 + n > size:
            raise ModelFormatError(f"{file}: safetensors header of {n} bytes does not fit the file ({size} bytes)")
        try:
            header = json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{file}: safetensors header is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise ModelFormatError(f"{file}: safetensors header is not a JSON object")
        data_start = 8 + n
        key = str(file)
        self._maps[key] = buf
        for name, info in header.items():
            if name == "__metadata__":
                if isinstance(info, dict):
                    self.metadata.update({str(k): str(v) for k, v in info.items()})
                continue
            try:
                dtype, shape, (b, e) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ModelFormatError(f"{file}: malformed header entry for tensor {name!r}") from None
            if dtype not in _ITEMSIZE:
                raise ModelFormatError(f"{file}: tensor {name!r} has unsupported dtype {dtype}")
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if any(s < 0 for s in shape) or not (0 <= b <= e) or e - b != count * _ITEMSIZE[dtype] \
                    or data_start + e > size:
                raise ModelFormatError(f"{file}: tensor {name!r} ({dtype} {list(shape)}) has inconsistent "
                                       f"data_offsets [{b}, {e}]")
            if name in self.tensors:
                raise ModelFormatError(f"{file}: tensor {name!r} appears in two files")
            self.tensors[name] = SafetensorsTensorInfo(name, dtype, shape, key, data_start + b, data_start + e)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def array(self, name: str) -> mx.array:
        """The tensor as an ``mx.array`` over the mapping (no copy on the CPU)."""
        info = self.tensors[name]
        raw = self._maps[info.file][info.begin : info.end]
        if info.dtype == "U32":
            # MLX's view of a flat byte array keeps sharing the mapping.
            return _C.gguf_mlx_view(raw, [raw.size], "uint8").view(mx.uint32).reshape(info.shape)
        if info.dtype == "BOOL":
            return _C.gguf_mlx_view(raw, list(info.shape), "uint8").astype(mx.bool_)
        return _C.gguf_mlx_view(raw, list(info.shape), _DTYPES[info.dtype])

    def close(self) -> None:
        """Drops the directory's references; arrays handed out keep their mapping alive."""
        self._maps.clear()
