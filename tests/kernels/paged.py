"""Builders for paged-attention test inputs.

Pools start filled with NaN and only the slots of real tokens are written, so a
kernel that reads an unused slot, a padding table entry or a key past a
sequence's context produces NaN and fails the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# Outputs are compared with the float64 reference run on the same (rounded)
# inputs, so the error is float32 accumulation plus one output rounding.
TOLERANCE = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """x rounded to `dtype` and back to float32 (what the kernel sees)."""
    return np.array(mx.array(x).astype(DTYPES[dtype]).astype(mx.float32))


def to_numpy(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32))


@dataclass
class PagedBatch:
    k_cache: np.ndarray   # float32 values (already rounded to dtype), NaN where unused
    v_cache: np.ndarray
    block_tables: np.ndarray  # int32 [S, max_blocks], -1 padded
    context_lens: np.ndarray  # int32 [S]
    dtype: str

    def mx_caches(self):
        dt = DTYPES[self.dtype]
        return mx.array(self.k_cache).astype(dt), mx.array(self.v_cache).astype(dt)


def make_paged(rng, context_lens, num_kv_heads, head_dim, block_size, dtype="float32",
               extra_blocks=3, extra_table_cols=2) -> PagedBatch:
    """Random K/V for sequences of the given lengths, scattered over a shuffled pool."""
    context_lens = np.asarray(context_lens, dtype=np.int32)
    blocks_per_seq = [(int(c) + block_size - 1) // block_size for c in context_lens]
    num_blocks = sum(blocks_per_seq) + extra_blocks
    max_blocks = max(blocks_per_seq, default=0) + extra_table_cols
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = np.full(shape, np.nan, dtype=np.float32)
    v_cache = np.full(shape, np.nan, dtype=np.float32)
    perm = rng.permutation(num_blocks).astype(np.int32)
    tables = np.full((len(context_lens), max_blocks), -1, dtype=np.int32)
    used = 0
    for s, (ctx, nblk) in enumerate(zip(context_lens, blocks_per_seq)):
        tables[s, :nblk] = perm[used:used + nblk]
        used += nblk
        pos = np.arange(ctx)
        blk, off = tables[s, pos // block_size], pos % block_size
        k_cache[blk, off] = round_to(rng.standard_normal((ctx, num_kv_heads, head_dim)), dtype)
        v_cache[blk, off] = round_to(rng.standard_normal((ctx, num_kv_heads, head_dim)), dtype)
    return PagedBatch(k_cache, v_cache, tables, context_lens, dtype)


def random_q(rng, num_tokens, num_heads, head_dim, dtype):
    return round_to(rng.standard_normal((num_tokens, num_heads, head_dim)), dtype)


def same_bits(a: mx.array, b: mx.array) -> bool:
    """Bitwise equality (NaN-safe) of two arrays of the same dtype."""
    view = {mx.float32: mx.uint32, mx.float16: mx.uint16, mx.bfloat16: mx.uint16}[a.dtype]
    return a.shape == b.shape and bool(mx.array_equal(a.view(view), b.view(view)).item())
