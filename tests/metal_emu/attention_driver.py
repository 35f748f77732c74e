"""Launches the paged-attention entry points the way csrc/metal encodes them
(grid, threadgroup size and memory, buffer order of metal/kernels/params.h)."""

from __future__ import annotations

import numpy as np

from metal_emu import params
from metal_emu.emu import THREADGROUP
from metal_emu.storage import from_storage, to_storage


def attention_params(q_shape, k_cache_shape, num_seqs, max_blocks, scale, causal=True, window=None,
                     softcap=None, partition_size=0, num_partitions=1):
    num_blocks, block_size, kvh, d = k_cache_shape
    heads = q_shape[1]
    group = heads // kvh
    # Contiguous pools: strides in elements of the block, token and head axes.
    strides = (block_size * kvh * d, kvh * d, d)
    return params.PagedAttentionParams(
        num_seqs, q_shape[0], heads, kvh, block_size, max_blocks, num_blocks, *strides, *strides,
        scale, softcap or 0.0, window or 0, int(causal), partition_size, num_partitions,
        min(group, params.DECODE_MAX_HEADS))


def decode(emulator, batch, q, scale, window=None, softcap=None, partition_size=0, seed=0):
    """q float32 [S, H, D] (already representable in batch.dtype) -> float32 output."""
    dtype = batch.dtype
    num_seqs, heads, d = q.shape
    kvh = batch.k_cache.shape[2]
    out = to_storage(np.zeros(q.shape, np.float32), dtype)
    if num_seqs == 0:
        return from_storage(out, dtype)
    max_blocks = batch.block_tables.shape[1]
    capacity = max_blocks * batch.k_cache.shape[1]
    parts = -(-capacity // partition_size) if partition_size else 1
    p = attention_params(q.shape, batch.k_cache.shape, num_seqs, max_blocks, scale, True, window, softcap,
                         partition_size, parts)
    chunks = -(-(heads // kvh) // p.heads_per_group)
    smem = 4 * emulator.constant("decode_threadgroup_floats", d)
    common = [to_storage(q, dtype), to_storage(batch.k_cache, dtype), to_storage(batch.v_cache, dtype),
              np.ascontiguousarray(batch.block_tables, np.int32),
              np.ascontiguousarray(batch.context_lens, np.int32)]
    if not partition_size:
        emulator.launch(f"tf_paged_attention_decode_{dtype}_d{d}", common + [out, p, THREADGROUP],
                        (kvh * chunks, num_seqs, 1), (32,), smem, seed)
        return from_storage(out, dtype)
    acc = np.full((parts, num_seqs, heads, d), np.nan, np.float32)
    mx_ = np.full((parts, num_seqs, heads), np.nan, np.float32)
    sm = np.full((parts, num_seqs, heads), np.nan, np.float32)
    emulator.launch(f"tf_paged_attention_decode_split_{dtype}_d{d}", common + [acc, mx_, sm, p, THREADGROUP],
                    (kvh * chunks, num_seqs, parts), (32,), smem, seed)
    emulator.launch(f"tf_paged_attention_decode_reduce_{dtype}_d{d}", [acc, mx_, sm, out, p],
                    (heads, num_seqs, 1), (32,), 0, seed)
    return from_storage(out, dtype)


def prefill(emulator, batch, q, query_start_loc, scale, causal=True, window=None, softcap=None, seed=0):
    """q float32 [T, H, D]; sequence s owns q[qsl[s]:qsl[s+1]] -> float32 output."""
    dtype = batch.dtype
    num_tokens, heads, d = q.shape
    num_seqs = len(batch.context_lens)
    out = to_storage(np.zeros(q.shape, np.float32), dtype)
    if num_tokens == 0 or num_seqs == 0:
        return from_storage(out, dtype)
    max_blocks = batch.block_tables.shape[1]
    p = attention_params(q.shape, batch.k_cache.shape, num_seqs, max_blocks, scale, causal, window, softcap)
    smem = 4 * emulator.constant("prefill_threadgroup_floats", d)
    # The host cannot read query_start_loc (device data): it launches an upper
    # bound on the tiles of all sequences (prefill_max_tiles in params.h).
    tiles = -(-num_tokens // params.PREFILL_ROWS) + min(num_seqs, num_tokens)
    emulator.launch(f"tf_paged_attention_prefill_{dtype}_d{d}",
                    [to_storage(q, dtype), to_storage(batch.k_cache, dtype), to_storage(batch.v_cache, dtype),
                     np.ascontiguousarray(batch.block_tables, np.int32),
                     np.ascontiguousarray(query_start_loc, np.int32),
                     np.ascontiguousarray(batch.context_lens, np.int32), out, p, THREADGROUP],
                    (heads, tiles, 1), (32 * params.PREFILL_SIMDGROUPS,), smem, seed)
    return from_storage(out, dtype)
