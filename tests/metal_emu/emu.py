"""Build and drive the Metal emulator (runtime.cpp + metal_shim.h + metal/*.metal).

The library is compiled with clang++ once per distinct source tree (a hash of
every input is the cache key) and loaded with ctypes. `Emulator.launch` runs
one entry point over a grid, the way a Metal host encodes a dispatch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
METAL_DIR = REPO / "metal"
EMU_SOURCES = ["runtime.cpp", "harness.cpp"]
EMU_HEADERS = ["runtime.h", "launch.h", "metal_shim.h"]
CXXFLAGS = ["-std=c++20", "-O1", "-fPIC", "-Wall", "-Wno-unknown-attributes", "-Wno-unused-parameter",
            "-Wno-unused-variable", "-ffp-contract=off"]
# Passed to ctypes for the slot the runtime fills with threadgroup memory.
THREADGROUP = object()


def find_clang() -> str | None:
    for name in ("clang++", "clang++-14", "clang++-15", "clang++-16"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _inputs(metal_dir: Path, entry_files: list[Path]) -> list[Path]:
    files = sorted(metal_dir.rglob("*.h")) + entry_files
    return files + [HERE / f for f in EMU_SOURCES + EMU_HEADERS]


def build(metal_dir: Path = METAL_DIR, cache_root: Path | None = None, only: list[str] | None = None,
          extra: list[Path] | None = None) -> Path:
    """Compiles the emulator for the kernels in `metal_dir` (all *.metal files,
    or the ones named in `only`) plus the entry-point files `extra`; returns
    the .so path."""
    clang = find_clang()
    if clang is None:
        raise RuntimeError("clang++ not found")
    h = hashlib.sha256(" ".join([clang] + CXXFLAGS).encode())
    entry_files = sorted(metal_dir.glob("*.metal")) if only is None else [metal_dir / n for n in only]
    entry_files += list(extra or [])
    for f in _inputs(metal_dir, entry_files):
        h.update(str(f.relative_to(metal_dir.parent if f.is_relative_to(metal_dir) else HERE)).encode())
        h.update(f.read_bytes())
    cache_root = cache_root or Path(tempfile.gettempdir()) / "tinyfast-metal-emu"
    out_dir = cache_root / h.hexdigest()[:16]
    lib = out_dir / "libtfemu.so"
    if lib.exists():
        return lib
    tmp = Path(tempfile.mkdtemp(dir=cache_root if cache_root.exists() else None))
    (tmp / "all_kernels.inc").write_text(
        "".join(f'#include "{p}"\n' for p in entry_files))
    cmd = [clang, *CXXFLAGS, "-shared", f"-I{HERE}", f"-I{metal_dir}", f"-I{tmp}",
           *[str(HERE / s) for s in EMU_SOURCES], "-o", str(tmp / "libtfemu.so")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"emulator build failed:\n{' '.join(cmd)}\n{res.stderr[-6000:]}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return lib


class EmulatorError(RuntimeError):
    """A synchronization error the runtime reported (divergent barrier, ...)."""


class Emulator:
    def __init__(self, lib_path: Path):
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.tfemu_kernel_names.restype = ctypes.c_char_p
        self.lib.tfemu_launched_names.restype = ctypes.c_char_p
        self.lib.tfemu_param_size.restype = ctypes.c_int
        self.lib.tfemu_param_size.argtypes = [ctypes.c_char_p]
        self.lib.tfemu_param_offset.restype = ctypes.c_int
        self.lib.tfemu_param_offset.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        self.lib.tfemu_constant.restype = ctypes.c_int
        self.lib.tfemu_constant.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.lib.tfemu_launch.restype = ctypes.c_int
        self.lib.tfemu_launch.argtypes = [
            ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint), ctypes.c_ulong,
            ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_int]

    def kernel_names(self) -> set[str]:
        return set(self.lib.tfemu_kernel_names().decode().split())

    def launched_names(self) -> set[str]:
        return set(self.lib.tfemu_launched_names().decode().split())

    def param_size(self, struct_name: str) -> int:
        return self.lib.tfemu_param_size(struct_name.encode())

    def param_offset(self, struct_name: str, field: str) -> int:
        return self.lib.tfemu_param_offset(struct_name.encode(), field.encode())

    def constant(self, name: str, head_dim: int = 0) -> int:
        """A launch constant or threadgroup-memory size of metal/kernels/params.h."""
        value = self.lib.tfemu_constant(name.encode(), head_dim)
        assert value >= 0, name
        return value

    def launch(self, name: str, args: list, grid, group, threadgroup_bytes: int = 0, seed: int = 0):
        """args: C-contiguous numpy arrays (written in place), ctypes structures
        (constant params) or THREADGROUP, in buffer-index order."""
        ptrs = (ctypes.c_void_p * max(1, len(args)))()
        tg_arg = -1
        for i, a in enumerate(args):
            if a is THREADGROUP:
                tg_arg = i
            elif isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError(f"argument {i} of {name} is not C-contiguous")
                # A zero-size array still needs a valid, non-null address.
                ptrs[i] = a.ctypes.data if a.size else ctypes.addressof(_EMPTY)
            else:
                ptrs[i] = ctypes.addressof(a)
        grid3 = (ctypes.c_uint * 3)(*(list(grid) + [1, 1])[:3])
        group3 = (ctypes.c_uint * 3)(*(list(group) + [1, 1])[:3])
        err = ctypes.create_string_buffer(4096)
        rc = self.lib.tfemu_launch(name.encode(), ptrs, len(args), tg_arg, grid3, group3, threadgroup_bytes,
                                   seed, err, len(err))
        if rc:
            raise EmulatorError(err.value.decode())


_EMPTY = ctypes.create_string_buffer(64)
