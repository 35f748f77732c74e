"""NumPy references for paged attention (vLLM vocabulary).

KV cache layout: [num_blocks, block_size, num_kv_heads, head_dim].  Token at
position p of a sequence lives in block block_tables[seq, p // block_size] at
offset p % block_size; its flat slot is block_id * block_size + offset.

Conventions shared by every function here:
  * GQA: query head h reads kv head h // (num_heads // num_kv_heads).
  * Sliding window w (Gemma / HF): a query at position t sees keys at
    positions p with t - p < w, i.e. itself and the w-1 previous tokens.
    With causal=False the window still drops keys too far in the past;
    later keys stay visible.
  * Softcap c: logits = c * tanh(logits / c), applied after `scale` and
    before masking/softmax (Gemma-2 style).
  * Math in float64, results returned as float32.
"""

from __future__ import annotations

import numpy as np


def write_kv(k, v, k_cache, v_cache, slot_mapping):
    """Scatter k/v [num_tokens, num_kv_heads, head_dim] into copies of the
    caches at flat slots; slot -1 marks a padding token and is skipped."""
    k_cache = np.array(k_cache, copy=True)
    v_cache = np.array(v_cache, copy=True)
    nb, bs = k_cache.shape[:2]
    slots = np.asarray(slot_mapping, dtype=np.int64)
    keep = slots >= 0
    if np.any(slots[keep] >= nb * bs):
        raise IndexError("slot outside the cache")
    blk, off = slots[keep] // bs, slots[keep] % bs
    k_cache[blk, off] = np.asarray(k)[keep]
    v_cache[blk, off] = np.asarray(v)[keep]
    return k_cache, v_cache


def gather_kv(cache, block_table, length):
    """The first `length` tokens of one sequence as [length, num_kv_heads, head_dim]."""
    bs = cache.shape[1]
    pos = np.arange(length)
    blocks = np.asarray(block_table)[pos // bs]
    if np.any(blocks < 0):  # catch reads of unused (padding) table entries
        raise IndexError("block table entry used before being assigned")
    return cache[blocks, pos % bs].astype(np.float64)


def _softcap(logits, softcap):
    return logits if softcap is None else softcap * np.tanh(logits / softcap)


def _attend_one(q, keys, values, q_pos, scale, causal, sliding_window, softcap):
    """One query token, all heads: q [H, D], keys/values [L, KVH, D]."""
    num_heads = q.shape[0]
    group = num_heads // keys.shape[1]
    out = np.empty((num_heads, values.shape[2]))
    key_pos = np.arange(keys.shape[0])
    visible = np.ones(keys.shape[0], dtype=bool)
    if causal:
        visible &= key_pos <= q_pos
    if sliding_window is not None:
        visible &= (q_pos - key_pos) < sliding_window
    for h in range(num_heads):
        kv = h // group
        logits = _softcap(scale * (keys[visible, kv] @ q[h]), softcap)
        p = np.exp(logits - logits.max())
        out[h] = (p / p.sum()) @ values[visible, kv]
    return out


def paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale,
                           sliding_window=None, softcap=None):
    """One new query per sequence, at position context_len - 1.
    q: [num_seqs, num_heads, head_dim] -> [num_seqs, num_heads, head_dim]."""
    q = np.asarray(q, dtype=np.float64)
    _check_gqa(q.shape[1], k_cache.shape[2])
    out = np.empty(q.shape)
    for i, n_ctx in enumerate(np.asarray(context_lens)):
        keys = gather_kv(k_cache, block_tables[i], int(n_ctx))
        values = gather_kv(v_cache, block_tables[i], int(n_ctx))
        out[i] = _attend_one(q[i], keys, values, int(n_ctx) - 1, scale, True,
                             sliding_window, softcap)
    return out.astype(np.float32)


def paged_attention_prefill(q, k_cache, v_cache, block_tables, query_start_loc,
                            context_lens, scale, causal=True, sliding_window=None,
                            softcap=None):
    """Varlen prefill / chunked prefill.  Sequence i owns q[qsl[i]:qsl[i+1]]:
    the LAST n_i tokens of its context of context_lens[i] tokens (K/V for all
    of them already in the cache), so its query j sits at position
    context_lens[i] - n_i + j.  q: [num_tokens, num_heads, head_dim]."""
    q = np.asarray(q, dtype=np.float64)
    _check_gqa(q.shape[1], k_cache.shape[2])
    qsl = np.asarray(query_start_loc)
    out = np.zeros(q.shape)
    for i, n_ctx in enumerate(np.asarray(context_lens)):
        n_ctx = int(n_ctx)
        start, end = int(qsl[i]), int(qsl[i + 1])
        if end - start > n_ctx:
            raise ValueError("more queries than context tokens")
        keys = gather_kv(k_cache, block_tables[i], n_ctx)
        values = gather_kv(v_cache, block_tables[i], n_ctx)
        first_pos = n_ctx - (end - start)
        for j in range(end - start):
            out[start + j] = _attend_one(q[start + j], keys, values, first_pos + j,
                                         scale, causal, sliding_window, softcap)
    return out.astype(np.float32)


def dense_attention(q, k, v, scale, causal=True, sliding_window=None, softcap=None,
                    q_offset=0):
    """Plain attention over contiguous K/V, independent of the paged code path.
    q [Tq, H, D], k/v [Tk, KVH, D]; query i is at position q_offset + i, key j
    at position j."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    num_heads, num_kv = q.shape[1], k.shape[1]
    _check_gqa(num_heads, num_kv)
    # expand kv heads so head h pairs with kv head h // group
    k = np.repeat(k, num_heads // num_kv, axis=1)
    v = np.repeat(v, num_heads // num_kv, axis=1)
    logits = _softcap(np.einsum("qhd,khd->hqk", q, k) * scale, softcap)
    qp = q_offset + np.arange(q.shape[0])[:, None]
    kp = np.arange(k.shape[0])[None, :]
    mask = np.ones((q.shape[0], k.shape[0]), dtype=bool)
    if causal:
        mask &= kp <= qp
    if sliding_window is not None:
        mask &= (qp - kp) < sliding_window
    logits = np.where(mask[None], logits, -np.inf)
    m = logits.max(axis=-1, keepdims=True)
    p = np.exp(logits - m)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v).astype(np.float32)


def _check_gqa(num_heads, num_kv_heads):
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} not a multiple of num_kv_heads {num_kv_heads}")
