"""Prompt logprobs end to end on tiny random HF models: the real LLMEngine (scheduler, runner,
chunked prefill, prefix cache, preemption) against log_softmax of transformers' logits.

The engine needs a tokenizer for token texts: the model directory gets a word-level
``tokenizer.json`` ("t0".."t319"), built with HuggingFace ``tokenizers``.
"""

import json

import mlx.core as mx
import numpy as np
import pytest
from models import tiny_models as tm

from tinyfast import SamplingParams
from tinyfast.engine import EngineArgs, LLMEngine
from tinyfast.models import load_model

VOCAB = 320
ATOL = 1e-4  # logits agree within 5e-5 (test_hf_parity); log_softmax adds the logsumexp's error


def _with_tokenizer(path):
    import tokenizers

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({}))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tiny_hf, tmp_path_factory):
    """name -> (HF model, tinyfast model, tokenizer)."""
    cache = {}

    def get(name):
        if name not in cache:
            hf, _, _ = tiny_hf(name)
            path = tmp_path_factory.mktemp(f"{name}_tok")
            tm.save(hf, path)
            model, tokenizer = load_model(_with_tokenizer(path))
            assert tokenizer is not None
            cache[name] = (hf, model, tokenizer)
        return cache[name]

    return get


def _engine(model, tokenizer, **kw):
    args = dict(block_size=4, max_num_seqs=8, max_num_batched_tokens=8, num_kv_blocks=96, max_model_len=128,
                kv_cache_dtype="float32")
    args.update(kw)
    return LLMEngine(model, tokenizer, EngineArgs(**args))


def _run(engine, requests, *, slice_rows=None, on_step=None):
    """Adds (id, prompt, params) requests and steps to completion; final outputs by id."""
    if slice_rows is not None:
        engine.prompt_logprobs_slice_rows = slice_rows
    for rid, prompt, params in requests:
        engine.add_request(rid, prompt, params)
    final = {}
    steps = 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out
        steps += 1
        if on_step is not None:
            on_step(engine, steps)
    assert engine.scheduler.block_manager.num_used_blocks == 0
    engine.scheduler.block_manager.check_invariants()
    return final


def _reference(hf, prompt):
    logits = tm.hf_logits(hf, prompt).astype(np.float64)
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def _check_invariants(entries, prompt, k):
    assert len(entries) == len(prompt) and entries[0] is None
    for j in range(1, len(prompt)):
        e = entries[j]
        actual = e[prompt[j]]
        assert actual.token_id == prompt[j] and actual.rank >= 1 and actual.logprob <= 1e-6
        assert list(e)[0] == prompt[j]  # the actual token first, as vLLM
        top = [lp for lp in e.values() if lp.rank <= k]
        assert len(e) in (k, k + 1) and len(top) == min(k, len(e))
        ordered = sorted(top, key=lambda lp: lp.rank)
        assert [lp.rank for lp in ordered] == list(range(1, len(top) + 1))
        assert all(a.logprob >= b.logprob for a, b in zip(ordered, ordered[1:]))
        if k and actual.rank <= k:
            assert len(e) == k
        if k and actual.rank > k:
            assert len(e) == k + 1 and actual.logprob <= ordered[-1].logprob
        assert all(lp.token == f"t{lp.token_id}" for lp in e.values())


def _check_reference(entries, ref, prompt, k):
    for j in range(1, len(prompt)):
        row, e = ref[j - 1], entries[j]
        t = prompt[j]
        assert abs(e[t].logprob - row[t]) < ATOL, (j, e[t].logprob, row[t])
        # Rank: 1 + tokens more likely, up to reference ties within the tolerance.
        assert (row > row[t] + ATOL).sum() + 1 <= e[t].rank <= (row > row[t] - ATOL).sum() + 1
        got_top = sorted((lp.logprob for lp in e.values() if lp.rank is not None and lp.rank <= k), reverse=True)
        np.testing.assert_allclose(got_top, np.sort(row)[::-1][:k], atol=ATOL, rtol=0)
        for lp in e.values():
            assert abs(lp.logprob - row[lp.token_id]) < ATOL


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_prompt_logprobs_match_transformers_chunked_and_mixed(tiny, name):
    hf, model, tokenizer = tiny(name)
    rng = np.random.default_rng(7)
    prompts = tm.random_prompts(rng, VOCAB, [23, 13, 17, 9, 30], shared_prefix=12)
    engine = _engine(model, tokenizer)
    # Put the shared prefix in the cache first: the prompt-logprobs requests must not take those
    # hits (no logits there) while the plain ones in the same batch do.
    warm = _run(engine, [("warm", prompts[1], SamplingParams(temperature=0, max_tokens=2))])
    assert warm["warm"].prompt_logprobs is None
    ks = {"a": 5, "c": 0, "e": 20}
    params = {rid: SamplingParams(temperature=0, max_tokens=3, prompt_logprobs=k) for rid, k in ks.items()}
    params["b"] = SamplingParams(temperature=0, max_tokens=3, logprobs=2)
    params["d"] = SamplingParams(temperature=0.8, seed=1, max_tokens=3)
    ids = ["a", "b", "c", "d", "e"]
    final = _run(engine, [(rid, p, params[rid]) for rid, p in zip(ids, prompts)], slice_rows=3)
    for rid, prompt in zip(ids, prompts):
        out = final[rid]
        if rid not in ks:
            assert out.prompt_logprobs is None
            continue
        assert out.metrics.num_cached_tokens == 0  # skipped the cache although the prefix was there
        _check_invariants(out.prompt_logprobs, prompt, ks[rid])
        _check_reference(out.prompt_logprobs, _reference(hf, prompt), prompt, ks[rid])
    assert final["b"].metrics.num_cached_tokens >= 8  # other requests still hit
    # The greedy continuation is unaffected by asking for prompt logprobs.
    want, _ = tm.hf_generate(hf, prompts[0], 3)
    assert final["a"].outputs[0].token_ids == want


def test_prompt_logprobs_survive_preemption_and_fork(tiny):
    hf, model, tokenizer = tiny("llama")
    rng = np.random.default_rng(8)
    prompt = [int(x) for x in rng.integers(3, VOCAB, 26)]
    engine = _engine(model, tokenizer)
    preempted = []

    def preempt_mid_prefill(engine, steps):
        # After the first 8-token chunk and again after the second: a recompute from position 0.
        if steps in (1, 2):
            sid = engine.requests["p"].seqs[0].seq_id
            engine.scheduler.preempt(sid)
            preempted.append(sid)

    params = SamplingParams(temperature=0, max_tokens=4, prompt_logprobs=4, n=2)
    final = _run(engine, [("p", prompt, params)], slice_rows=2, on_step=preempt_mid_prefill)
    assert len(preempted) == 2 and engine.scheduler.num_preemptions == 2
    out = final["p"]
    assert len(out.outputs) == 2
    _check_invariants(out.prompt_logprobs, prompt, 4)
    _check_reference(out.prompt_logprobs, _reference(hf, prompt), prompt, 4)


def test_prompt_logprobs_with_pool_pressure_preemption(tiny):
    """A pool too small for both requests: the newest (the prompt-logprobs one) is preempted by
    recompute, possibly several times, and still returns every position once."""
    hf, model, tokenizer = tiny("llama")
    rng = np.random.default_rng(9)
    old = [int(x) for x in rng.integers(3, VOCAB, 6)]
    new = [int(x) for x in rng.integers(3, VOCAB, 22)]
    engine = _engine(model, tokenizer, num_kv_blocks=10, max_model_len=40)
    final = _run(engine, [("old", old, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)),
                          ("new", new, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True,
                                                      prompt_logprobs=2))])
    assert engine.scheduler.num_preemptions >= 1
    _check_invariants(final["new"].prompt_logprobs, new, 2)
    _check_reference(final["new"].prompt_logprobs, _reference(hf, new), new, 2)


def test_one_token_chunks_next_to_decodes(tiny):
    """A budget of 2: the prompt-logprobs request prefills one token per step beside a decoding
    request, so every step has one token per sequence (the traced decode shape) yet needs hidden
    rows: those steps must run the eager forward."""
    hf, model, tokenizer = tiny("gemma3")
    rng = np.random.default_rng(12)
    a, b = [int(x) for x in rng.integers(3, VOCAB, 2)], [int(x) for x in rng.integers(3, VOCAB, 9)]
    engine = _engine(model, tokenizer, max_num_batched_tokens=2)
    final = _run(engine, [("a", a, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)),
                          ("b", b, SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=1))])
    _check_invariants(final["b"].prompt_logprobs, b, 1)
    _check_reference(final["b"].prompt_logprobs, _reference(hf, b), b, 1)
    assert final["a"].outputs[0].token_ids == tm.hf_generate(hf, a, 12)[0]


def test_abort_mid_prefill_frees_blocks_and_one_token_prompt(tiny):
    _, model, tokenizer = tiny("llama")
    engine = _engine(model, tokenizer)
    engine.add_request("x", list(range(3, 40)), SamplingParams(max_tokens=2, prompt_logprobs=3))
    engine.step()
    assert len(engine.requests["x"].prompt_logprobs) == 9  # None + the first chunk's 8 positions
    assert engine.abort_request("x")
    final = _run(engine, [("one", [5], SamplingParams(max_tokens=1, prompt_logprobs=3))])
    assert final["one"].prompt_logprobs == [None]


def test_slices_do_not_change_results(tiny):
    _, model, tokenizer = tiny("llama")
    prompt = [int(x) for x in np.random.default_rng(10).integers(3, VOCAB, 20)]
    p = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=3)
    a = _run(_engine(model, tokenizer, max_num_batched_tokens=64), [("r", prompt, p)], slice_rows=1)["r"]
    b = _run(_engine(model, tokenizer, max_num_batched_tokens=64), [("r", prompt, p)], slice_rows=64)["r"]
    for ea, eb in zip(a.prompt_logprobs[1:], b.prompt_logprobs[1:]):
        assert ea.keys() == eb.keys()
        for t in ea:
            assert ea[t].rank == eb[t].rank and ea[t].logprob == pytest.approx(eb[t].logprob, abs=1e-6)


@pytest.mark.parametrize("value", [-1, 21, 1.5, True, "3"])
def test_invalid_prompt_logprobs_are_rejected(value):
    with pytest.raises(ValueError, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=value)


def test_valid_prompt_logprobs_bounds():
    assert SamplingParams(prompt_logprobs=0).prompt_logprobs == 0
    assert SamplingParams(prompt_logprobs=20).prompt_logprobs == 20


def test_hidden_rows_of_the_runner_give_the_forward_logits(tiny):
    """``execute_with_hidden`` rows turned into logits by ``model.logits`` equal the logits the
    plain forward returns for the same rows."""
    from models.driver import prompt_step

    from tinyfast.engine import ModelRunner

    _, model, _ = tiny("gemma3")
    prompt = [int(x) for x in np.random.default_rng(11).integers(3, VOCAB, 11)]
    step = prompt_step(prompt, block_size=4)
    want = np.array(ModelRunner(model, 16, 4, mx.float32).execute(step))
    logits, hidden = ModelRunner(model, 16, 4, mx.float32).execute_with_hidden(step, np.arange(11))
    np.testing.assert_allclose(np.array(model.logits(hidden)), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.array(logits), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("vocab", [7, 300, 262144])
def test_top_k_equals_a_full_sort(vocab):
    from tinyfast.engine.prompt_logprobs import top_k

    rng = np.random.default_rng(vocab)
    x = rng.normal(size=(6, vocab)).astype(np.float32)
    x[1] = np.round(x[1])  # many ties: lower ids first
    x[2] = 0.0
    x[3, :] = -np.inf
    x[3, 5] = 1.0
    for k in (1, 3, 20):
        ids, vals = top_k(x, k)
        for r in range(6):
            want = np.lexsort((np.arange(vocab), -x[r]))[: min(k, vocab)]
            assert ids[r].tolist() == want.tolist() and vals[r].tolist() == x[r, want].tolist()
    x[4, 3] = np.nan
    ids, _ = top_k(x, 3)  # no crash; the finite maxima still come first
    assert ids[4].tolist() == np.lexsort((np.arange(vocab), -np.nan_to_num(x[4], nan=-np.inf)))[:3].tolist()
