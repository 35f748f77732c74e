"""ctypes mirrors of metal/kernels/params.h (sizes are checked against the C++)."""

import ctypes


class WriteKVParams(ctypes.Structure):
    _fields_ = [("num_tokens", ctypes.c_int), ("row_elems", ctypes.c_int), ("num_slots", ctypes.c_int)]


class PagedAttentionParams(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in (
        "num_seqs", "num_tokens", "num_heads", "num_kv_heads", "block_size", "max_blocks", "num_blocks",
        "k_stride_block", "k_stride_token", "k_stride_head", "v_stride_block", "v_stride_token",
        "v_stride_head")] + [("scale", ctypes.c_float), ("softcap", ctypes.c_float)] + [
        (n, ctypes.c_int) for n in (
            "sliding_window", "causal", "partition_size", "num_partitions", "heads_per_group")]


class QMatvecParams(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("m", "n", "k", "row_bytes")]


ALL = [WriteKVParams, PagedAttentionParams, QMatvecParams]

# Mirrors of the launch constants in params.h.
WRITE_KV_THREADS = 256
DECODE_MAX_HEADS = 8
PREFILL_SIMDGROUPS = 4
PREFILL_ROWS = 8 * PREFILL_SIMDGROUPS
PREFILL_KEYS = 16
QMATVEC_SIMDGROUPS = 2
QMATVEC_ROWS = 2
