"""Paged attention for one layer: write this step's K/V into the pools, then attend.

The step's metadata (vLLM names) is one explicit :class:`AttentionMetadata`
passed down the model, never a global. ``query_start_loc is None`` marks a
pure-decode step (one query per sequence), which runs the decode kernel; any
other step (prefill chunks, prefix-cache hits, decode tokens mixed in) runs the
varlen prefill kernel. Both read the pools returned by ``write_kv``, so MLX
orders the in-place write before the reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from tinyfast.ops import paged_attention_decode, paged_attention_prefill, write_kv


@dataclass
class AttentionMetadata:
    """One step's flat batch layout, as int32 MLX arrays."""

    slot_mapping: mx.array
    """[T] flat KV slot of each token (block * block_size + offset); -1 = padding, not written."""
    block_tables: mx.array
    """[S, max_blocks] block ids per sequence, -1 padded."""
    context_lens: mx.array
    """[S] tokens in each sequence's context after this step."""
    query_start_loc: mx.array | None = None
    """[S + 1] offsets of each sequence's queries in the flat batch; None: one query per sequence."""

    @property
    def is_decode(self) -> bool:
        return self.query_start_loc is None


class PagedAttention:
    """GQA/MQA attention over paged K/V pools ``[num_blocks, block_size, n_kv_heads, head_dim]``."""

    __slots__ = ("n_heads", "n_kv_heads", "head_dim", "scale", "sliding_window", "softcap")

    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, scale: float,
                 sliding_window: int | None = None, softcap: float | None = None):
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.scale = float(scale)
        self.sliding_window = sliding_window
        self.softcap = softcap

    def __call__(self, q: mx.array, k: mx.array, v: mx.array, cache: tuple[mx.array, mx.array],
                 meta: AttentionMetadata) -> tuple[mx.array, tuple[mx.array, mx.array]]:
        """q ``[T, n_heads, head_dim]``, k/v ``[T, n_kv_heads, head_dim]`` (any float dtype).

        Returns the attention output ``[T, n_heads * head_dim]`` in q's dtype and the
        written pools (evaluate them, or something depending on them, for the write
        to happen). Math runs in float32 whatever the pool dtype.
        """
        k_pool, v_pool = cache
        dt = k_pool.dtype
        k_pool, v_pool = write_kv(k.astype(dt), v.astype(dt), k_pool, v_pool, meta.slot_mapping)
        qd = q.astype(dt)
        if meta.is_decode:
            o = paged_attention_decode(qd, k_pool, v_pool, meta.block_tables, meta.context_lens, self.scale,
                                       self.sliding_window, self.softcap)
        else:
            o = paged_attention_prefill(qd, k_pool, v_pool, meta.block_tables, meta.query_start_loc,
                                        meta.context_lens, self.scale, True, self.sliding_window, self.softcap)
        return o.astype(q.dtype).reshape(q.shape[0], -1), (k_pool, v_pool)
