"""Prompt logprobs over HTTP: `echo` + `logprobs` on /v1/completions (OpenAI's legacy shape, as
lm-evaluation-harness `local-completions` uses it for log-likelihoods) and vLLM's
`prompt_logprobs` extension, with the official `openai` client against the live server."""

from __future__ import annotations

import asyncio
from operator import itemgetter

import httpx
import pytest

from tinyfast import SamplingParams

openai = pytest.importorskip("openai")

PROMPT = "Paris is the capital of"


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _engine_prompt_logprobs(engine, prompt, k):
    """The same prompt straight through the engine (AsyncLLM.generate), no HTTP in between."""
    async def run():
        final = None
        async for out in engine.generate(prompt, SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=k)):
            final = out
        return final

    return asyncio.run(run())


def test_echo_logprobs_are_the_engine_prompt_logprobs(client, model_id, engine, idle):
    ids = engine.engine.tokenizer.encode(PROMPT)
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=2, temperature=0, echo=True, logprobs=2)
    (choice,) = r.choices
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(ids) + 2
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert choice.text.startswith(PROMPT) and r.usage.completion_tokens == 2
    want = _engine_prompt_logprobs(engine, ids, 2).prompt_logprobs
    for j in range(1, len(ids)):
        assert lp.token_logprobs[j] == pytest.approx(want[j][ids[j]].logprob, abs=1e-5)
        assert lp.tokens[j] == want[j][ids[j]].token
        assert 2 <= len(lp.top_logprobs[j]) <= 3
        assert lp.top_logprobs[j][lp.tokens[j]] == lp.token_logprobs[j]
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    # The generated tokens follow, as in a plain logprobs request.
    plain = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=2, temperature=0, logprobs=2)
    assert lp.token_logprobs[len(ids):] == pytest.approx(plain.choices[0].logprobs.token_logprobs, abs=1e-5)


def test_loglikelihood_request_as_lm_eval_sends_it(model_id, live, engine, idle):
    """lm-eval `local-completions` loglikelihood: token-id prompts (context + continuation), then
    `sum(token_logprobs[ctxlen:-1])` and greedy = each continuation token is the top one."""
    tok = engine.engine.tokenizer
    context = tok.encode(PROMPT)
    requests = [context + tok.encode(" France", add_special_tokens=False),
                context + tok.encode(" bananas and apples", add_special_tokens=False)]
    payload = {"model": model_id, "prompt": requests, "temperature": 0, "max_tokens": 1, "logprobs": 1,
               "seed": 1234, "echo": True}
    r = httpx.post(live.url + "/v1/completions", json=payload, timeout=120)
    assert r.status_code == 200, r.text
    results = []
    for choice, tokens in zip(sorted(r.json()["choices"], key=itemgetter("index")), requests):
        lps = choice["logprobs"]["token_logprobs"]
        assert len(lps) == len(tokens) + 1 and lps[0] is None
        cont = lps[len(context):-1]
        tops = choice["logprobs"]["top_logprobs"][len(context):-1]
        results.append((sum(cont), all(v == max(top.values()) for v, top in zip(cont, tops))))
    (france, france_greedy), (other, other_greedy) = results
    assert france > other and france_greedy and not other_greedy
    assert france > -3  # Gemma 270M puts most of its mass on " France"


def test_max_tokens_zero_scores_the_prompt_only(client, model_id, engine, idle):
    ids = engine.engine.tokenizer.encode(PROMPT)
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
    (choice,) = r.choices
    assert choice.text == PROMPT and choice.finish_reason == "length"
    assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens == len(ids)
    assert len(choice.logprobs.token_logprobs) == len(ids) and choice.logprobs.token_logprobs[0] is None
    assert all(len(t) == 1 for t in choice.logprobs.top_logprobs[1:])  # logprobs=0: the token itself
    streamed = list(client.completions.create(model=model_id, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0,
                                              stream=True))
    texts = "".join(c.choices[0].text for c in streamed if c.choices)
    lps = [v for c in streamed if c.choices and c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    assert texts == PROMPT and lps == pytest.approx(choice.logprobs.token_logprobs, abs=1e-5)
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "length"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt=PROMPT, max_tokens=0)
    assert e.value.body["param"] == "max_tokens"


def test_streamed_echo_logprobs_match_the_whole_response(client, model_id, idle):
    whole = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=3, temperature=0, echo=True,
                                      logprobs=1)
    chunks = list(client.completions.create(model=model_id, prompt=PROMPT, max_tokens=3, temperature=0, echo=True,
                                            logprobs=1, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    lps = [v for c in chunks if c.choices and c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    assert text == whole.choices[0].text
    assert tokens == whole.choices[0].logprobs.tokens
    assert lps == pytest.approx(whole.choices[0].logprobs.token_logprobs, abs=1e-5)


def test_vllm_prompt_logprobs_parameter(client, model_id, engine, idle):
    ids = engine.engine.tokenizer.encode(PROMPT)
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=1, temperature=0,
                                  extra_body={"prompt_logprobs": 3})
    plp = r.choices[0].model_extra["prompt_logprobs"]
    assert len(plp) == len(ids) and plp[0] is None
    for j in range(1, len(ids)):
        entry = plp[j]
        assert str(ids[j]) in entry and len(entry) in (3, 4)
        assert sorted(e["rank"] for e in entry.values() if e["rank"] <= 3) == [1, 2, 3]
    chat = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=1, extra_body={"prompt_logprobs": 0})
    plp = chat.model_extra["prompt_logprobs"]
    assert len(plp) == chat.usage.prompt_tokens and plp[0] is None
    assert all(len(e) == 1 and e[next(iter(e))]["rank"] >= 1 for e in plp[1:])
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt=PROMPT, max_tokens=1, stream=True,
                                  extra_body={"prompt_logprobs": 1})
    assert e.value.body["param"] == "prompt_logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt=PROMPT, max_tokens=1, extra_body={"prompt_logprobs": 21})
    assert e.value.body["param"] == "prompt_logprobs"
