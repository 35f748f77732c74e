"""Paged KV cache ops: ``write_kv`` and paged attention (decode and varlen prefill).

Layout (vLLM vocabulary): per layer, K and V pools of shape
``[num_blocks, block_size, num_kv_heads, head_dim]`` (float32, float16 or
bfloat16). Token ``p`` of a sequence lives in block ``block_tables[s, p // block_size]``
at offset ``p % block_size``; its flat slot is ``block * block_size + offset``.

Conventions (identical to ``tests/reference/attention.py``):

* GQA/MQA: query head ``h`` reads kv head ``h // (num_heads // num_kv_heads)``.
* ``sliding_window=w``: a query at position ``t`` sees keys ``p`` with ``t - p < w``.
* ``softcap=c``: logits become ``c * tanh(logits / c)`` after ``scale``, before the softmax.
* ``block_tables`` rows are padded with -1 after a sequence's blocks; those entries
  are never read.

Metadata (``slot_mapping``, ``block_tables``, ``context_lens``, ``query_start_loc``)
may be int32 ``mx.array`` or NumPy arrays / lists of integers (converted to int32
after a range check). When the metadata is already evaluated, bad values raise
``ValueError`` from the call itself; when it is lazy (or inside ``mx.compile``) the
same check runs at evaluation, before any memory is touched, and MLX raises it as
``RuntimeError``. The kernels additionally never address memory outside the pools.

Outputs are deterministic and batch invariant: a sequence's result is bitwise the
same alone or in any batch.
"""

from __future__ import annotations

from typing import Optional, Tuple

import mlx.core as mx
import numpy as np

from tinyfast import _C

__all__ = ["write_kv", "paged_attention_decode", "paged_attention_prefill"]

_INT32 = np.iinfo(np.int32)


def _index_array(x, name: str) -> mx.array:
    """int32 mx.array from an mx.array (passed through; the op checks its dtype),
    a NumPy array or a sequence of integers."""
    if isinstance(x, mx.array):
        return x
    a = np.asarray(x)
    if a.size == 0 and a.dtype == np.float64:  # e.g. [] or np.zeros((0, n))
        a = a.astype(np.int32)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.size and (a.min() < _INT32.min or a.max() > _INT32.max):
        raise ValueError(f"{name} has values outside the int32 range")
    return mx.array(a.astype(np.int32, copy=False))


def _tensor(x, name: str) -> mx.array:
    if not isinstance(x, mx.array):
        raise TypeError(f"{name} must be an mlx.core.array, got {type(x).__name__}")
    return x


def write_kv(k: mx.array, v: mx.array, k_cache: mx.array, v_cache: mx.array,
             slot_mapping) -> Tuple[mx.array, mx.array]:
    """Writes this step's keys and values into the paged pools, in place.

    ``k``, ``v``: ``[num_tokens, num_kv_heads, head_dim]``, same dtype as the pools.
    ``slot_mapping``: ``[num_tokens]`` flat slots; ``-1`` skips a (padding) token.
    Slots must be unique and inside the pool.

    Returns ``(k_cache_out, v_cache_out)``. **In place**: the outputs share the
    pools' memory, nothing is copied, and once they are evaluated the arrays passed
    as ``k_cache``/``v_cache`` (and anything sharing their buffer) hold the new rows.
    Pass the *outputs* to the attention ops of the same step so MLX runs the write
    before the reads, and evaluate them (directly or through the attention output),
    or the write never happens (MLX is lazy). Other lazy computations reading the
    old pool arrays in the same evaluation may see either state. The pools must be
    row-contiguous: a whole array, or a view such as ``layers[i:i+1].reshape(...)``
    of a bigger one (MLX's integer indexing ``layers[i]`` gathers into a new array,
    so the write would land in that copy).
    """
    return _C.write_kv(_tensor(k, "k"), _tensor(v, "v"), _tensor(k_cache, "k_cache"),
                       _tensor(v_cache, "v_cache"), _index_array(slot_mapping, "slot_mapping"))


def paged_attention_decode(q: mx.array, k_cache: mx.array, v_cache: mx.array, block_tables,
                           context_lens, scale: float, sliding_window: Optional[int] = None,
                           softcap: Optional[float] = None) -> mx.array:
    """Attention of one new query per sequence over its paged context.

    ``q``: ``[num_seqs, num_heads, head_dim]``; sequence ``s``'s query sits at position
    ``context_lens[s] - 1`` and its own K/V must already be in the pools (write_kv).
    ``block_tables``: ``[num_seqs, max_blocks]`` int32, -1 padded.
    ``context_lens``: ``[num_seqs]``, each >= 1 and <= max_blocks * block_size.
    Returns ``[num_seqs, num_heads, head_dim]`` in q's dtype (math in float32).
    Long contexts are split over all cores (split-K with an exact merge).
    """
    return _C.paged_attention_decode(
        _tensor(q, "q"), _tensor(k_cache, "k_cache"), _tensor(v_cache, "v_cache"),
        _index_array(block_tables, "block_tables"), _index_array(context_lens, "context_lens"),
        float(scale), None if sliding_window is None else int(sliding_window),
        None if softcap is None else float(softcap))


def paged_attention_prefill(q: mx.array, k_cache: mx.array, v_cache: mx.array, block_tables,
                            query_start_loc, context_lens, scale: float, causal: bool = True,
                            sliding_window: Optional[int] = None,
                            softcap: Optional[float] = None) -> mx.array:
    """Varlen attention for several sequences' new tokens over cached prefix + new tokens.

    ``q``: ``[num_tokens, num_heads, head_dim]``; sequence ``s`` owns rows
    ``query_start_loc[s]:query_start_loc[s+1]`` (``[num_seqs + 1]``, starts at 0,
    non-decreasing, ends at num_tokens). They are the *last* tokens of its
    ``context_lens[s]`` tokens (chunked prefill, prefix-cache hits), so query ``j``
    is at position ``context_lens[s] - n_s + j``; all their K/V must be in the pools.
    Flash-attention style tiling: memory does not grow with length squared.
    Returns q's shape and dtype.
    """
    return _C.paged_attention_prefill(
        _tensor(q, "q"), _tensor(k_cache, "k_cache"), _tensor(v_cache, "v_cache"),
        _index_array(block_tables, "block_tables"), _index_array(query_start_loc, "query_start_loc"),
        _index_array(context_lens, "context_lens"), float(scale), bool(causal),
        None if sliding_window is None else int(sliding_window),
        None if softcap is None else float(softcap))
