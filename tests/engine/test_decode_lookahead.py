"""Decode lookahead (engine queues the next decode step, fed with the lazy argmax, before sampling
the current one): the outputs are exactly those of the engine without it, whatever happens to the
queued step - used, or dropped because a request stopped on EOS or a stop string, was aborted,
was joined by a new request, crossed into a new KV block or was preempted - and no KV block
leaks. The model is the tiny random Llama (tests/engine/tiny_checkpoint.py)."""

from __future__ import annotations

import random

import pytest
from engine.tiny_checkpoint import VOCAB, write_tiny_llama

from tinyfast import LLM, SamplingParams

pytest.importorskip("safetensors")

# A small pool: finished requests' blocks (including partial last blocks a dropped lookahead wrote
# into) are handed to later requests, and prefix-cache hits and preemption happen.
ENGINE = dict(num_kv_blocks=24, block_size=16, max_num_seqs=6, max_num_batched_tokens=96, max_model_len=192)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _llm(checkpoint, lookahead: bool) -> LLM:
    return LLM(checkpoint, decode_lookahead=lookahead, **ENGINE)


def _workload(seed: int):
    rng = random.Random(seed)
    prompts, params = [], []
    base = [rng.randrange(VOCAB) for _ in range(40)]
    for i in range(24):
        if i % 3 == 0:  # shares a prefix with earlier requests: prefix-cache hits
            prompt = base[: rng.randint(17, 40)] + [rng.randrange(VOCAB) for _ in range(rng.randint(0, 9))]
        else:
            prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 70))]
        kind = rng.random()
        if kind < 0.3:
            p = SamplingParams(max_tokens=rng.randint(1, 60), temperature=0.0, ignore_eos=True)
        elif kind < 0.6:  # stops early on a token the random model emits often
            p = SamplingParams(max_tokens=60, temperature=0.0, stop_token_ids=[rng.randrange(VOCAB)
                                                                               for _ in range(12)])
        elif kind < 0.8:
            p = SamplingParams(max_tokens=rng.randint(2, 40), temperature=0.0, stop=["a", "e", "\n"])
        else:
            p = SamplingParams(max_tokens=rng.randint(2, 40), temperature=0.0)
        prompts.append(prompt)
        params.append(p)
    return prompts, params


def _ids(outputs):
    return [[list(c.token_ids) for c in o.outputs] for o in outputs]


@pytest.mark.parametrize("seed", [0, 1])
def test_same_outputs_with_and_without_lookahead(checkpoint, seed):
    prompts, params = _workload(seed)
    on, off = _llm(checkpoint, True), _llm(checkpoint, False)
    # One batch (continuous batching: requests join and leave while others decode) ...
    got, want = on.generate(prompts, params), off.generate(prompts, params)
    assert _ids(got) == _ids(want)
    assert [o.outputs[0].finish_reason for o in got] == [o.outputs[0].finish_reason for o in want]
    # ... then one at a time (batch-1 decode, where the lookahead is used the most).
    for prompt, p in zip(prompts, params):
        assert _ids(on.generate([prompt], [p])) == _ids(off.generate([prompt], [p]))
    stats = on.engine.stats
    assert stats["lookahead_used"] > 0 and stats["lookahead_dropped"] > 0, stats
    assert off.engine.stats["lookahead_used"] == 0
    for llm in (on, off):
        assert llm.engine.scheduler.block_manager.num_used_blocks == 0
        llm.engine.scheduler.block_manager.check_invariants()


def test_lookahead_used_for_most_steps_of_a_greedy_request(checkpoint):
    """Batch 1, no stop condition but the length: every decode step was queued one step ahead
    except the first (it follows the prefill step, which queues nothing) - including the steps
    entering a new KV block (the engine reserves it) - and none is queued after the last token."""
    llm = _llm(checkpoint, True)
    prompt = list(range(3, 40))
    llm.generate([prompt], [SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)])  # warm-up
    before = dict(llm.engine.stats)
    out = llm.generate([prompt], [SamplingParams(max_tokens=65, temperature=0.0, ignore_eos=True)])
    assert len(out[0].outputs[0].token_ids) == 65
    used = llm.engine.stats["lookahead_used"] - before["lookahead_used"]
    dropped = llm.engine.stats["lookahead_dropped"] - before["lookahead_dropped"]
    # 64 decode steps (positions 37-100); 4 of them enter a block (48, 64, 80, 96).
    assert dropped == 0
    assert used == 64 - 1, used
    bm = llm.engine.scheduler.block_manager
    assert bm.num_used_blocks == 0
    bm.check_invariants()


def test_sampled_requests_do_not_look_ahead(checkpoint):
    llm = _llm(checkpoint, True)
    out = llm.generate([[5, 6, 7]] * 2, [SamplingParams(max_tokens=20, temperature=0.8, seed=1),
                                         SamplingParams(max_tokens=20, temperature=0.0)])
    assert all(len(o.outputs[0].token_ids) == 20 for o in out)
    assert llm.engine.stats["lookahead_used"] == 0 and llm.engine.stats["lookahead_dropped"] == 0


def test_abort_with_a_queued_step(checkpoint):
    """Aborting a request whose next step is already queued drops that step; the others'
    outputs are unchanged and nothing leaks."""
    on, off = _llm(checkpoint, True), _llm(checkpoint, False)
    p = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    results = []
    for llm in (on, off):
        eng = llm.engine
        eng.add_request("a", [9, 8, 7, 6], p)
        eng.add_request("b", [1, 2, 3], p)
        for _ in range(6):
            eng.step()
        assert eng.abort_request("a")
        final = {}
        while eng.has_unfinished_requests():
            for o in eng.step():
                final[o.request_id] = o
        results.append(list(final["b"].outputs[0].token_ids))
        assert eng.scheduler.block_manager.num_used_blocks == 0
    assert results[0] == results[1]
    assert on.engine.stats["lookahead_dropped"] >= 1

