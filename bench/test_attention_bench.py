"""Paged attention and write_kv benchmarks (pytest-benchmark; nothing is asserted on time).

Run: pytest bench -q --benchmark-only -k attention

Each shape runs twice in a row: first MLX's own mx.fast.scaled_dot_product_attention
on contiguous K/V ([1, kv_heads, L, head_dim], the in-run peer), then tinyfast's paged
op on a pool with a shuffled block table. The tinyfast entry records in extra_info:
  speedup_vs_mlx_sdpa   peer median time / tinyfast median time (> 1: tinyfast faster)
  tokens_x_heads_per_s  (decode) queries x query heads per second
  kv_gb_per_s           (decode) K+V bytes read per second
  gflop_per_s           (prefill) 4 * causal pairs * heads * head_dim per second
The decode-step benchmark shows write_kv + attention time does not grow with the pool.
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np
import pytest

import tinyfast
from tinyfast.ops import paged_attention_decode, paged_attention_prefill, write_kv

BLOCK = 16
GEMMA = ("gemma3-270m", 4, 1, 256)    # heads, kv heads, head dim
LLAMA = ("llama-8b-like", 32, 8, 128)

DECODE_CASES = [(GEMMA, 1, ctx, "float32") for ctx in (512, 2048, 8192, 32768)]
DECODE_CASES += [(GEMMA, 1, 32768, "bfloat16")]
DECODE_CASES += [(LLAMA, 1, ctx, "float32") for ctx in (512, 2048, 4096)]
DECODE_CASES += [(LLAMA, 8, 1024, "float32")]
# MLX's CPU SDPA takes minutes on a Llama-shaped 4k causal prefill, so that shape stops at 1k.
PREFILL_CASES = [(GEMMA, 512, "float32"), (GEMMA, 4096, "float32"), (LLAMA, 512, "float32"),
                 (LLAMA, 1024, "float32")]

_peer_median: dict[str, float] = {}


def _median_seconds(fn, rounds=3) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _run(benchmark, fn, rounds, warmup_rounds=1):
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    return benchmark.stats.stats.median


def _paged_pool(rng, num_seqs, ctx, kv_heads, dim, dtype):
    blocks = (ctx + BLOCK - 1) // BLOCK
    num_blocks = num_seqs * blocks
    kc = mx.random.normal((num_blocks, BLOCK, kv_heads, dim)).astype(dtype)
    vc = mx.random.normal((num_blocks, BLOCK, kv_heads, dim)).astype(dtype)
    table = rng.permutation(num_blocks).astype(np.int32).reshape(num_seqs, blocks)
    return kc, vc, mx.array(table), mx.array(np.full(num_seqs, ctx, np.int32))


def _contiguous_from_pool(pool, table, ctx):
    """[num_seqs, kv_heads, ctx, dim] copies of each sequence's keys (the peer's layout)."""
    seqs = [pool[table[i]].reshape(-1, *pool.shape[2:])[:ctx] for i in range(table.shape[0])]
    return mx.contiguous(mx.stack(seqs).transpose(0, 2, 1, 3))


def _case_id(case):
    (name, h, kvh, d), *rest = case
    return "-".join([name] + [str(x) for x in rest])


@pytest.mark.parametrize("impl", ["mlx_sdpa", "tinyfast"])
@pytest.mark.parametrize("case", DECODE_CASES, ids=[_case_id(c) for c in DECODE_CASES])
def test_attention_decode(benchmark, case, impl):
    (name, heads, kv_heads, dim), num_seqs, ctx, dtype_name = case
    dtype = getattr(mx, dtype_name)
    rng = np.random.default_rng(0)
    kc, vc, table, lens = _paged_pool(rng, num_seqs, ctx, kv_heads, dim, dtype)
    q = mx.random.normal((num_seqs, heads, dim)).astype(dtype)
    scale = dim ** -0.5
    mx.eval(kc, vc, q)
    key = _case_id(case)
    benchmark.group = f"decode {key}"
    benchmark.extra_info.update(model=name, num_seqs=num_seqs, context=ctx, dtype=dtype_name,
                                threads=tinyfast.num_threads())

    def peer_fn():
        mx.eval(mx.fast.scaled_dot_product_attention(q4, k4, v4, scale=scale))

    if impl == "mlx_sdpa" or key not in _peer_median:
        k4, v4 = _contiguous_from_pool(kc, table, ctx), _contiguous_from_pool(vc, table, ctx)
        q4 = q.reshape(num_seqs, heads, 1, dim)
        mx.eval(k4, v4, q4)
    if impl == "mlx_sdpa":
        rounds = 3 if ctx * num_seqs >= 8192 else 20
        _peer_median[key] = _run(benchmark, peer_fn, rounds)
        return
    peer = _peer_median.get(key) or _median_seconds(peer_fn)
    t = _run(benchmark, lambda: mx.eval(paged_attention_decode(q, kc, vc, table, lens, scale)), 30)
    kv_bytes = 2 * num_seqs * ctx * kv_heads * dim * kc.itemsize
    benchmark.extra_info.update(
        speedup_vs_mlx_sdpa=round(peer / t, 2),
        tokens_x_heads_per_s=round(num_seqs * heads / t),
        kv_gb_per_s=round(kv_bytes / t / 1e9, 2),
        mlx_sdpa_median_ms=round(peer * 1e3, 3))


@pytest.mark.parametrize("impl", ["mlx_sdpa", "tinyfast"])
@pytest.mark.parametrize("case", PREFILL_CASES, ids=[_case_id(c) for c in PREFILL_CASES])
def test_attention_prefill(benchmark, case, impl):
    (name, heads, kv_heads, dim), length, dtype_name = case
    dtype = getattr(mx, dtype_name)
    rng = np.random.default_rng(0)
    kc, vc, table, lens = _paged_pool(rng, 1, length, kv_heads, dim, dtype)
    q = mx.random.normal((length, heads, dim)).astype(dtype)
    qsl = mx.array([0, length], dtype=mx.int32)
    scale = dim ** -0.5
    mx.eval(kc, vc, q)
    key = _case_id(case)
    benchmark.group = f"prefill {key}"
    benchmark.extra_info.update(model=name, length=length, dtype=dtype_name, threads=tinyfast.num_threads())
    rounds = 1 if length >= 4096 else 3

    def peer_fn():
        mx.eval(mx.fast.scaled_dot_product_attention(q4, k4, v4, scale=scale, mask="causal"))

    if impl == "mlx_sdpa" or key not in _peer_median:
        k4, v4 = _contiguous_from_pool(kc, table, length), _contiguous_from_pool(vc, table, length)
        q4 = mx.contiguous(q.reshape(1, length, heads, dim).transpose(0, 2, 1, 3))
        mx.eval(k4, v4, q4)
    if impl == "mlx_sdpa":
        _peer_median[key] = _run(benchmark, peer_fn, rounds, warmup_rounds=0 if length >= 1024 else 1)
        return
    peer = _peer_median.get(key) or _median_seconds(peer_fn, 1)
    t = _run(benchmark, lambda: mx.eval(paged_attention_prefill(q, kc, vc, table, qsl, lens, scale)),
             max(rounds, 3))
    flops = 4 * (length * (length + 1) / 2) * heads * dim
    benchmark.extra_info.update(speedup_vs_mlx_sdpa=round(peer / t, 2),
                                gflop_per_s=round(flops / t / 1e9, 1),
                                mlx_sdpa_median_ms=round(peer * 1e3, 1))


def _decode_step(pool_mb, dtype=mx.float16, heads=32, kv_heads=8, dim=128, num_seqs=8, ctx=1024):
    """A Llama-like layer's decode step on a pool of pool_mb MB (K + V): write_kv of
    one new token per sequence, then paged attention over the sequences' contexts,
    whose blocks are spread over the whole pool."""
    block_bytes = BLOCK * kv_heads * dim * 2 * 2  # K and V, 2-byte elements
    num_blocks = pool_mb * (1 << 20) // block_bytes
    kc = mx.zeros((num_blocks, BLOCK, kv_heads, dim), dtype=dtype)
    vc = mx.zeros((num_blocks, BLOCK, kv_heads, dim), dtype=dtype)
    rng = np.random.default_rng(0)
    table = rng.choice(num_blocks, size=(num_seqs, ctx // BLOCK), replace=False).astype(np.int32)
    slots = mx.array((table[:, -1] * BLOCK + BLOCK - 1).astype(np.int32))  # each sequence's last position
    k = mx.random.normal((num_seqs, kv_heads, dim)).astype(dtype)
    v = mx.random.normal((num_seqs, kv_heads, dim)).astype(dtype)
    q = mx.random.normal((num_seqs, heads, dim)).astype(dtype)
    table, lens = mx.array(table), mx.array(np.full(num_seqs, ctx, np.int32))
    mx.eval(kc, vc, k, v, q)

    def step():
        ko, vo = write_kv(k, v, kc, vc, slots)
        mx.eval(paged_attention_decode(q, ko, vo, table, lens, dim ** -0.5))

    return step, 2 * kc.nbytes


@pytest.mark.parametrize("pool_mb", [64, 1024])
def test_attention_decode_step_pool_size(benchmark, pool_mb):
    """write_kv + attention for one decode step (8 sequences at 1k context, float16,
    32/8/128 heads): the pools are written in place, so the step costs the same for a
    64 MB or a 1 GB pool. The 1 GB case also times both pools alternately in the same
    loop (robust to load changes on a shared machine) and records the ratio."""
    step, pool_bytes = _decode_step(pool_mb)
    benchmark.group = "decode step vs pool size"
    benchmark.extra_info.update(pool_mb=pool_mb, pool_bytes=pool_bytes)
    _run(benchmark, step, 30)
    if pool_mb != 64:
        small, _ = _decode_step(64)
        times = {64: [], pool_mb: []}
        for _ in range(30):
            for size, fn in ((64, small), (pool_mb, step)):
                t = time.perf_counter()
                fn()
                times[size].append(time.perf_counter() - t)
        med = {size: float(np.median(ts)) for size, ts in times.items()}
        benchmark.extra_info.update(paired_median_ms_64mb=round(med[64] * 1e3, 3),
                                    paired_median_ms_this=round(med[pool_mb] * 1e3, 3),
                                    paired_ratio_vs_64mb=round(med[pool_mb] / med[64], 2))
