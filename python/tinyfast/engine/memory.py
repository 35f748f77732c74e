"""Sizing the KV pool from the memory this machine has free."""

from __future__ import annotations

import math
import mmap
import os
import platform
import subprocess

import mlx.core as mx
import numpy as np

from tinyfast import _C


TYPICAL_SEQUENCE_TOKENS = 2048


def available_memory_bytes() -> int:
    """Memory the process can still use without swapping (best effort per OS)."""
    if platform.system() == "Linux":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    if platform.system() == "Darwin":
        try:
            total = int(subprocess.check_output(["sysctl", "-n", "hw.memsize"]).strip())
            # Unified memory is shared with the GPU and the OS; count half as free.
            return total // 2
        except (OSError, ValueError, subprocess.CalledProcessError):
            pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def plan_kv_blocks(*, bytes_per_block: int, block_size: int, model_max_len: int, max_num_seqs: int,
                   memory_fraction: float, num_blocks: int | None, max_model_len: int | None) -> tuple[int, int]:
    """(num_blocks, max_model_len) for the pool; ValueError when not even one sequence fits."""
    if not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"kv_cache_memory_fraction must be in (0, 1], got {memory_fraction}")
    if max_model_len is not None and (max_model_len < 1 or max_model_len > model_max_len):
        raise ValueError(f"max_model_len must be in [1, {model_max_len}] for this model, got {max_model_len}")
    wanted_len = max_model_len or model_max_len
    if num_blocks is None:
        budget = int(available_memory_bytes() * memory_fraction)
        num_blocks = budget // bytes_per_block
        # Past what max_num_seqs typical-length sequences (plus one full-length one) can use,
        # memory is better left to the OS; pass num_kv_blocks for more.
        typical = min(wanted_len, TYPICAL_SEQUENCE_TOKENS)
        useful = max_num_seqs * -(-typical // block_size) + -(-wanted_len // block_size)
        num_blocks = min(num_blocks, useful)
        if num_blocks < 1:
            raise ValueError(
                f"not enough memory for a KV cache: {budget / 2**20:.0f} MiB budget "
                f"(kv_cache_memory_fraction={memory_fraction}) but one block needs "
                f"{bytes_per_block / 2**20:.2f} MiB; raise the fraction or free memory"
            )
    elif num_blocks < 1:
        raise ValueError(f"num_kv_blocks must be >= 1, got {num_blocks}")
    pool_tokens = num_blocks * block_size
    if max_model_len is not None and max_model_len > pool_tokens:
        raise ValueError(
            f"max_model_len={max_model_len} needs {-(-max_model_len // block_size)} KV blocks but the pool has "
            f"{num_blocks}; lower max_model_len or give the cache more memory"
        )
    return num_blocks, min(wanted_len, pool_tokens)


_DTYPE_NAMES = {mx.float16: "float16", mx.bfloat16: "bfloat16", mx.float32: "float32"}


def zeroed_pool(shape: tuple[int, ...], dtype) -> mx.array:
    """``mx.zeros(shape, dtype)`` whose memory the OS commits page by page on first write.

    Zero-filling a multi-GB KV pool up front costs a page fault per 4 KiB (over a second per GB)
    and makes all of it resident although most blocks may never be used. On MLX's CPU backend the
    pool is instead an anonymous private mapping (zero pages until written) viewed in place as an
    MLX array; it stays writable in place by ``write_kv``. With Metal present this returns
    ``mx.zeros``: GPU buffers come from MLX's own allocator."""
    name = _DTYPE_NAMES.get(dtype)
    nbytes = math.prod(shape) * dtype.size
    if name is None or nbytes == 0 or mx.metal.is_available():
        return mx.zeros(shape, dtype=dtype)
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # The array keeps the NumPy view, and through it the mapping, alive.
    return _C.gguf_mlx_view(np.frombuffer(mapping, dtype=np.uint8), list(shape), name)
