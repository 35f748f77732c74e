"""1,000 randomized requests through AsyncLLM with random aborts: every request ends, no KV block
is leaked, and greedy outputs do not depend on what else ran beside them or on preemption.

The model is a tiny random Llama with a byte-level tokenizer (tests/engine/tiny_checkpoint.py) so
the whole stack runs a thousand requests in well under a minute. The KV pool is kept small so
admission waits, preemption and prefix-cache eviction all happen."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from engine.tiny_checkpoint import EOS, VOCAB, write_tiny_llama

from tinyfast import LLM, AsyncLLM, SamplingParams

pytest.importorskip("safetensors")

N_REQUESTS = 1000
MAX_MODEL_LEN = 256
# 40 blocks x 16 tokens: fewer than 32 running sequences of ~100 tokens need, so preemption runs.
ENGINE = dict(num_kv_blocks=40, block_size=16, max_num_seqs=32, max_num_batched_tokens=128,
              max_model_len=MAX_MODEL_LEN)
STOPS = ["a", "xy", "é", "\n"]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return LLM(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama")), **ENGINE)


def _random_prompt(rng: random.Random) -> str | list[int]:
    kind = rng.random()
    if kind < 0.15:  # token ids, including every special id
        return [rng.randrange(VOCAB) for _ in range(rng.randint(1, 120))]
    if kind < 0.2:  # too long for the context: rejected when submitted
        return "z" * rng.randint(MAX_MODEL_LEN, 2 * MAX_MODEL_LEN)
    if kind < 0.35:  # shared prefixes: prefix-cache hits and evictions
        return "You are a helpful assistant. " * rng.randint(1, 3) + str(rng.randrange(10))
    alphabet = "abcdefghij xyz\né漢🙂"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 150)))


def _random_params(rng: random.Random, i: int) -> SamplingParams:
    greedy = rng.random() < 0.3
    return SamplingParams(
        max_tokens=rng.randint(1, 24),
        temperature=0.0 if greedy else rng.choice([0.5, 1.0, 1.5]),
        top_p=rng.choice([1.0, 0.9]),
        top_k=rng.choice([0, 0, 20]),
        n=1 if greedy else rng.choice([1, 1, 1, 2, 3]),
        seed=i,
        stop=rng.sample(STOPS, rng.randint(0, 2)),
        ignore_eos=rng.random() < 0.2,
    )


def test_thousand_random_requests_with_aborts_end_and_leak_nothing(llm):
    block_manager = llm.engine.scheduler.block_manager
    baseline = block_manager.num_used_blocks
    preemptions = llm.engine.scheduler.num_preemptions
    engine = AsyncLLM(llm.engine)
    rng = random.Random(2026)
    plans = []
    for i in range(N_REQUESTS):
        # How the client leaves: reads to the end, breaks after k outputs, is cancelled after a
        # delay, or the request is aborted by id from elsewhere.
        leave = rng.choices(["end", "break", "cancel", "abort"], weights=[6, 2, 1, 1])[0]
        plans.append((i, _random_prompt(rng), _random_params(rng, i), leave, rng.randint(0, 3), rng.random() * 0.3))
    outcome: dict[int, str] = {}
    finals: dict[int, object] = {}

    async def client(i, prompt, params, leave, k, delay):
        await asyncio.sleep(delay)  # arrivals spread over the first ~0.3 s, not all at once
        rid = f"stress-{i}"
        try:
            stream = engine.generate(prompt, params, request_id=rid)
            async with contextlib.aclosing(stream):
                n = 0
                async for out in stream:
                    if leave == "break" and n >= k:
                        outcome[i] = "aborted"
                        return
                    if leave == "abort" and n == k:
                        engine.abort(rid)
                        outcome[i] = "aborted"
                        return
                    n += 1
                    if out.finished:
                        finals[i] = out
                        outcome[i] = "finished"
        except ValueError:
            outcome[i] = "rejected"  # too long a prompt: a clear error, no request created

    async def run():
        tasks = [asyncio.create_task(client(*p)) for p in plans]
        for t in tasks:
            if plans[tasks.index(t)][3] == "cancel":
                asyncio.get_running_loop().call_later(plans[tasks.index(t)][5] + 0.05, t.cancel)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=600)
        for (i, *_), r in zip(plans, results):
            if isinstance(r, asyncio.CancelledError):
                outcome.setdefault(i, "cancelled")
            elif isinstance(r, BaseException):
                raise r
        for _ in range(400):  # aborts reach the engine at its next step boundary
            if not llm.engine.requests and engine.num_requests == 0:
                return
            await asyncio.sleep(0.05)

    try:
        asyncio.run(run())
        assert not llm.engine.requests, "requests left in the engine after every client ended"
    finally:
        engine.shutdown()

    assert len(outcome) == N_REQUESTS, f"{N_REQUESTS - len(outcome)} requests never ended"
    kinds = {k: sum(v == k for v in outcome.values()) for k in ("finished", "aborted", "cancelled", "rejected")}
    assert min(kinds.values()) > 0, kinds  # every path was exercised
    assert llm.engine.scheduler.num_preemptions > preemptions  # the small pool forced preemption
    assert block_manager.num_used_blocks == baseline
    block_manager.check_invariants()

    for i, out in finals.items():
        params = plans[i][2]
        assert len(out.outputs) == params.n
        for c in out.outputs:
            assert c.finish_reason in ("stop", "length"), c.finish_reason
            assert len(c.token_ids) <= params.max_tokens
            assert not any(s in c.text for s in params.stop), (c.text, params.stop)
            if c.finish_reason == "length":
                assert len(c.token_ids) == params.max_tokens
            if not params.ignore_eos:
                assert EOS not in c.token_ids[:-1]

    # Greedy results under load (batched with others, preempted, prefix hits) equal the same
    # requests run again afterwards in a different batch.
    greedy = [i for i, out in finals.items() if plans[i][2].temperature == 0][:40]
    assert len(greedy) >= 20
    alone = llm.generate([plans[i][1] for i in greedy], [plans[i][2] for i in greedy])
    for i, ref in zip(greedy, alone):
        assert finals[i].outputs[0].token_ids == ref.outputs[0].token_ids, f"request {i}"
    assert block_manager.num_used_blocks == baseline
