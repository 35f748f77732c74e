"""qmatmul throughput: matrix-vector GB/s against memory bandwidth measured in
the same run, prefill GFLOP/s, and MLX / NumPy peers on the same shapes.

Run:  pytest bench -q --benchmark-only -k qmatmul
Never asserts timings. Numbers land in each benchmark's extra_info:
  GBps          weight bytes read per second (best round; the median is in GBps_median)
  bandwidth_GBps  best streaming read of 256 MB with the same thread pool; one
                  read precedes every round (the machine may be shared, so the
                  ceiling is measured next to every number it is compared to)
  bw_fraction   GBps / bandwidth_GBps (best vs best)
  bw_fraction_paired_median  median over rounds of kernel GB/s / that round's read
  GFLOPps       2*M*N*K per second
  kernel        the qmatmul level ("avx2", "avx512"): both run where the CPU has them
Matrix-vector benchmarks rotate through enough copies of the weight to exceed
128 MB per round, so weights come from DRAM (as in decode) rather than the
32 MB L3, and evaluate all copies in one mx.eval (as a model step does).

MLX's CPU matmul and quantized_matmul are orders of magnitude slower here
(e.g. f32 4096x14336 at M=512 ~90 s), so the 4096x14336 peers at M=512 run
only with TINYFAST_BENCH_SLOW_PEERS=1.
"""

from __future__ import annotations

import os
import time

import mlx.core as mx
import numpy as np
import pytest

import tinyfast
from reference import qmatmul as qref
from tinyfast import _C
from tinyfast.ops import QuantizedWeight, qmatmul
from tinyfast.ops.quant import GGUF_BLOCKS, kernels

FORMATS = list(GGUF_BLOCKS) + ["affine4", "affine8"]
BIG = (4096, 14336)                        # N, K: a Llama-3-8B FFN down projection
GEMMA = {                                  # Gemma 3 270M (hidden 640, intermediate 2048, vocab 262144)
    "ffn_up_2048x640": (2048, 640),
    "ffn_down_640x2048": (640, 2048),
    "attn_o_640x1024": (640, 1024),
    "lm_head_262144x640": (262144, 640),
}
ROTATE_BYTES = 128 << 20
SLOW_PEERS = os.environ.get("TINYFAST_BENCH_SLOW_PEERS") == "1"
# The SIMD levels compared side by side (each run reports its own ratios);
# "auto" alone where neither x86 level exists.
BENCH_KERNELS = [k for k in ("avx2", "avx512") if k in kernels()] or ["auto"]


def fits(fmt: str, k: int) -> bool:
    return k % (GGUF_BLOCKS[fmt][0] if fmt in GGUF_BLOCKS else 64) == 0


def make_weight(fmt: str, n: int, k: int, seed: int) -> QuantizedWeight:
    """Random codes with sane scales: throughput does not depend on the values."""
    rng = np.random.default_rng(seed)
    if fmt in GGUF_BLOCKS:
        w = QuantizedWeight(qref.random_gguf_blocks(fmt, n, k, rng), fmt, (n, k))
    else:
        bits = int(fmt[-1])
        codes = mx.array(rng.integers(0, 2 ** 32, (n, k * bits // 32), dtype=np.uint64).astype(np.uint32))
        scales = mx.array((rng.standard_normal((n, k // 64)) * 0.01).astype(np.float16))
        biases = mx.array((rng.standard_normal((n, k // 64)) * 0.01).astype(np.float16))
        w = QuantizedWeight.from_affine(codes, scales, biases, group_size=64, bits=bits)
    mx.eval(*w.arrays)
    return w


def copies_for(nbytes: int, cap: int = 256) -> int:
    return max(1, min(cap, -(-ROTATE_BYTES // nbytes)))


_BW_BUF = None


def stream_read_GBps() -> float:
    """One streaming read of 256 MB with the kernels' thread pool (GB/s)."""
    global _BW_BUF
    if _BW_BUF is None:
        _BW_BUF = mx.array(np.ones(64 << 20, np.float32))
        mx.eval(_BW_BUF)
    t = time.perf_counter()
    _C._stream_read(_BW_BUF)
    return _BW_BUF.nbytes / (time.perf_counter() - t) / 1e9


def run(benchmark, fn, *, nbytes: int, flops: int, rounds: int, bandwidth: bool = True, **info):
    """Benchmarks fn; with bandwidth=True every round is preceded (untimed) by a
    streaming read, so each kernel time has a ceiling measured next to it."""
    bw = []
    setup = (lambda: bw.append(stream_read_GBps())) if bandwidth else None
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0 if rounds == 1 else 1)
    if benchmark.stats is None:  # --benchmark-disable: the body ran once as a smoke test
        return
    st = benchmark.stats.stats
    ei = benchmark.extra_info
    ei.update(info)
    ei["threads"] = tinyfast.num_threads()
    ei["GBps"] = round(nbytes / st.min / 1e9, 3)
    ei["GBps_median"] = round(nbytes / st.median / 1e9, 3)
    ei["GFLOPps"] = round(flops / st.min / 1e9, 3)
    if bandwidth:
        bw = bw[-len(st.data):]                      # drop the warmup round's read
        ei["bandwidth_GBps"] = round(max(bw), 3)
        ei["bw_fraction"] = round(nbytes / st.min / 1e9 / max(bw), 3)   # best vs best
        paired = [nbytes / t / 1e9 / b for t, b in zip(st.data, bw)]
        ei["bw_fraction_paired_median"] = round(float(np.median(paired)), 3)


# --------------------------------------------------------------- bandwidth

def test_qmatmul_bandwidth_stream_read(benchmark):
    """The ceiling the matvec numbers are compared to (also re-measured per benchmark)."""
    buf = mx.array(np.ones(64 << 20, np.float32))
    mx.eval(buf)
    run(benchmark, lambda: _C._stream_read(buf), nbytes=buf.nbytes, flops=0, rounds=10, bandwidth=False,
        what="C++ streaming read, thread pool")


def test_qmatmul_bandwidth_numpy_sum(benchmark):
    a = np.ones(64 << 20, np.float32)
    run(benchmark, a.sum, nbytes=a.nbytes, flops=0, rounds=10, bandwidth=False, what="numpy sum (1 thread)")


# ---------------------------------------------------------------- matvec

def _matvec(benchmark, fmt, n, k, kernel, rounds=10, **info):
    w0 = make_weight(fmt, n, k, 0)
    ws = [w0] + [make_weight(fmt, n, k, i) for i in range(1, copies_for(w0.nbytes))]
    x = mx.array(np.random.default_rng(1).standard_normal((1, k)).astype(np.float32))
    mx.eval(x)
    run(benchmark, lambda: mx.eval([qmatmul(x, w, kernel=kernel) for w in ws]), nbytes=w0.nbytes * len(ws),
        flops=2 * n * k * len(ws), rounds=rounds, format=fmt, kernel=kernel, shape=[n, k], M=1, copies=len(ws),
        **info)


@pytest.mark.parametrize("kernel", BENCH_KERNELS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_qmatmul_matvec_4096x14336(benchmark, fmt, kernel):
    _matvec(benchmark, fmt, *BIG, kernel)


@pytest.mark.parametrize("kernel", BENCH_KERNELS)
@pytest.mark.parametrize("shape", list(GEMMA))
@pytest.mark.parametrize("fmt", FORMATS)
def test_qmatmul_matvec_gemma(benchmark, fmt, shape, kernel):
    n, k = GEMMA[shape]
    if not fits(fmt, k):
        pytest.skip(f"{fmt} needs K % 256 == 0 (K={k}); the Gemma GGUF uses q5_0/q8_0 here")
    _matvec(benchmark, fmt, n, k, kernel, rounds=5 if n > 100000 else 10, layer=shape)


# --------------------------------------------------------------- prefill

@pytest.mark.parametrize("kernel", BENCH_KERNELS)
@pytest.mark.parametrize("m", [128, 512])
@pytest.mark.parametrize("fmt", FORMATS)
def test_qmatmul_prefill_4096x14336(benchmark, fmt, m, kernel):
    n, k = BIG
    w = make_weight(fmt, n, k, 0)
    x = mx.array(np.random.default_rng(1).standard_normal((m, k)).astype(np.float32))
    mx.eval(x)
    run(benchmark, lambda: mx.eval(qmatmul(x, w, kernel=kernel)), nbytes=w.nbytes, flops=2 * m * n * k, rounds=2,
        bandwidth=False, format=fmt, kernel=kernel, shape=[n, k], M=m)


@pytest.mark.parametrize("kernel", BENCH_KERNELS)
@pytest.mark.parametrize("m", [128, 512])
@pytest.mark.parametrize("fmt", FORMATS)
def test_qmatmul_prefill_gemma_ffn(benchmark, fmt, m, kernel):
    n, k = GEMMA["ffn_down_640x2048"]
    w = make_weight(fmt, n, k, 0)
    x = mx.array(np.random.default_rng(1).standard_normal((m, k)).astype(np.float32))
    mx.eval(x)
    run(benchmark, lambda: mx.eval(qmatmul(x, w, kernel=kernel)), nbytes=w.nbytes, flops=2 * m * n * k, rounds=5,
        bandwidth=False, format=fmt, kernel=kernel, shape=[n, k], M=m)


# ----------------------------------------------------------------- peers

def _dense(n, k, dtype):
    w = (mx.random.normal((n, k), key=mx.random.key(0)) * 0.02).astype(dtype)
    mx.eval(w)
    return w


def _mx_affine(n, k, bits):
    codes, scales, biases = mx.quantize(_dense(n, k, mx.float16), group_size=64, bits=bits)
    mx.eval(codes, scales, biases)
    return codes, scales, biases


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_qmatmul_peer_mx_matmul_matvec(benchmark, dtype):
    n, k = BIG
    w = _dense(n, k, getattr(mx, dtype))
    x = mx.random.normal((1, k)).astype(w.dtype)
    mx.eval(x)
    run(benchmark, lambda: mx.eval(x @ w.T), nbytes=w.nbytes, flops=2 * n * k, rounds=3,
        peer=f"mx.matmul {dtype}", shape=[n, k], M=1)


@pytest.mark.parametrize("bits", [4, 8])
def test_qmatmul_peer_mx_quantized_matmul_matvec(benchmark, bits):
    n, k = BIG
    codes, scales, biases = _mx_affine(n, k, bits)
    x = mx.random.normal((1, k))
    mx.eval(x)
    nbytes = codes.nbytes + scales.nbytes + biases.nbytes
    run(benchmark, lambda: mx.eval(mx.quantized_matmul(x, codes, scales, biases, group_size=64, bits=bits)),
        nbytes=nbytes, flops=2 * n * k, rounds=3, peer=f"mx.quantized_matmul affine{bits} g64", shape=[n, k], M=1)


def test_qmatmul_peer_numpy_f32_matvec(benchmark):
    n, k = BIG
    w = np.asarray(np.random.default_rng(0).standard_normal((n, k)), np.float32)
    x = np.ones((1, k), np.float32)
    run(benchmark, lambda: x @ w.T, nbytes=w.nbytes, flops=2 * n * k, rounds=5, peer="numpy f32 (BLAS)",
        shape=[n, k], M=1)


def _peer_prefill_params():
    out = []
    for shape in ("big", "gemma"):
        for m in (128, 512):
            marks = []
            if shape == "big" and m == 512 and not SLOW_PEERS:
                marks = [pytest.mark.skip(reason="MLX CPU takes minutes here; TINYFAST_BENCH_SLOW_PEERS=1")]
            out.append(pytest.param(shape, m, marks=marks, id=f"{shape}-M{m}"))
    return out


@pytest.mark.parametrize("shape,m", _peer_prefill_params())
@pytest.mark.parametrize("peer", ["mx.matmul float32", "mx.matmul float16", "mx.quantized_matmul affine4",
                                  "numpy float32"])
def test_qmatmul_peer_prefill(benchmark, peer, shape, m):
    n, k = BIG if shape == "big" else GEMMA["ffn_down_640x2048"]
    rounds = 1 if shape == "big" and not peer.startswith("numpy") else 3
    if peer.startswith("numpy"):
        w = np.asarray(np.random.default_rng(0).standard_normal((n, k)), np.float32)
        x = np.ones((m, k), np.float32)
        fn, nbytes = (lambda: x @ w.T), w.nbytes
    elif peer.startswith("mx.matmul"):
        w = _dense(n, k, getattr(mx, peer.split()[-1]))
        x = mx.random.normal((m, k)).astype(w.dtype)
        mx.eval(x)
        fn, nbytes = (lambda: mx.eval(x @ w.T)), w.nbytes
    else:
        codes, scales, biases = _mx_affine(n, k, 4)
        x = mx.random.normal((m, k))
        mx.eval(x)
        fn = lambda: mx.eval(mx.quantized_matmul(x, codes, scales, biases, group_size=64, bits=4))  # noqa: E731
        nbytes = codes.nbytes + scales.nbytes + biases.nbytes
    run(benchmark, fn, nbytes=nbytes, flops=2 * m * n * k, rounds=rounds, bandwidth=False, peer=peer,
        shape=[n, k], M=m)
