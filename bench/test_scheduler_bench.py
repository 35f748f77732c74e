"""Scheduler hot-path benchmarks (pytest-benchmark). Timings are reported, never asserted.

Run:  pytest bench -q                      (report, µs per step in the table)
      pytest bench -q --benchmark-disable  (smoke-run each body once)
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyfast.core import Scheduler, SchedulerConfig

BLOCK = 16
VOCAB = 32000


def _prompts(n: int, length: int, seed: int = 0, shared_prefix: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, VOCAB, shared_prefix, dtype=np.int32)
    return [
        np.concatenate([prefix, rng.integers(0, VOCAB, length - shared_prefix, dtype=np.int32)])
        for _ in range(n)
    ]


DECODE_SEQS = 256
DECODE_PROMPT = 32
DECODE_ROUNDS = 200
DECODE_WARMUP = 10


def _decode_ready_scheduler() -> Scheduler:
    max_len = DECODE_PROMPT + DECODE_ROUNDS + DECODE_WARMUP + 64
    cfg = SchedulerConfig(
        num_blocks=DECODE_SEQS * (-(-max_len // BLOCK)) + 64,
        block_size=BLOCK,
        max_num_seqs=DECODE_SEQS,
        max_num_batched_tokens=DECODE_SEQS * DECODE_PROMPT,
        max_model_len=max_len,
    )
    s = Scheduler(cfg)
    for i, p in enumerate(_prompts(DECODE_SEQS, DECODE_PROMPT)):
        s.add(i, p)
    out = s.step()
    assert out.num_seqs == DECODE_SEQS and out.num_tokens == DECODE_SEQS * DECODE_PROMPT
    s.update(out.sample_seq_ids, np.ones(out.sample_seq_ids.shape[0], dtype=np.int32))
    return s


def test_decode_step_update_256(benchmark):
    """One step() + update() with 256 running sequences, all in decode."""
    s = _decode_ready_scheduler()
    toks = np.full(DECODE_SEQS, 5, dtype=np.int32)

    def step_and_update():
        out = s.step()
        s.update(out.sample_seq_ids, toks[: out.sample_seq_ids.shape[0]])
        return out

    out = benchmark.pedantic(step_and_update, rounds=DECODE_ROUNDS, warmup_rounds=DECODE_WARMUP, iterations=1)
    assert out.num_seqs == DECODE_SEQS
    assert out.num_tokens == DECODE_SEQS
    assert out.sample_seq_ids.shape == (DECODE_SEQS,)
    assert s.num_running == DECODE_SEQS and s.num_preemptions == 0


ADMIT_SEQS = 1024
ADMIT_PROMPT = 32


@pytest.mark.parametrize("shared_prefix", [0, 16], ids=["unique", "shared-prefix-16"])
def test_prefill_admission_1024(benchmark, shared_prefix):
    """One step() that admits 1024 waiting sequences (prefix-cache lookup + allocation)."""
    prompts = _prompts(ADMIT_SEQS, ADMIT_PROMPT, seed=1, shared_prefix=shared_prefix)
    cfg = SchedulerConfig(
        num_blocks=ADMIT_SEQS * (ADMIT_PROMPT // BLOCK + 1) + 64,
        block_size=BLOCK,
        max_num_seqs=ADMIT_SEQS,
        max_num_batched_tokens=ADMIT_SEQS * ADMIT_PROMPT,
        max_model_len=ADMIT_PROMPT * 4,
    )
    warm = None
    if shared_prefix:
        warm = prompts[0]

    def setup():
        s = Scheduler(cfg)
        if warm is not None:  # put the shared prefix block in the cache first
            s.add(10**9, warm)
            o = s.step()
            s.update(o.sample_seq_ids, np.zeros(o.sample_seq_ids.shape[0], dtype=np.int32))
            s.finish(10**9)
        for i, p in enumerate(prompts):
            s.add(i, p)
        return (s,), {}

    out = benchmark.pedantic(lambda s: s.step(), setup=setup, rounds=15, warmup_rounds=1, iterations=1)
    assert out.num_seqs == ADMIT_SEQS
    assert out.sample_seq_ids.shape == (ADMIT_SEQS,)
    expected_tokens = ADMIT_SEQS * ADMIT_PROMPT - (ADMIT_SEQS * BLOCK if shared_prefix else 0)
    assert out.num_tokens == expected_tokens
