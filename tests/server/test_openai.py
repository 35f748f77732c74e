"""The OpenAI routes driven by the official `openai` client against a live server."""

from __future__ import annotations

import json

import httpx
import pytest

openai = pytest.importorskip("openai")

PROMPT = "Paris is the capital of"


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_health_was_503_until_warmup_done(live):
    assert live.health_seen[-1] == 200
    assert 503 in live.health_seen, live.health_seen


def test_models(client, model_id):
    models = client.models.list()
    assert [m.id for m in models.data] == [model_id]
    assert client.models.retrieve(model_id).id == model_id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_completion_greedy(client, model_id, idle):
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.model == model_id
    (choice,) = r.choices
    assert "France" in choice.text
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens >= 5 and r.usage.total_tokens == r.usage.prompt_tokens + 6


def test_completion_stream_matches_and_reports_usage(client, model_id, idle):
    whole = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(client.completions.create(model=model_id, prompt=PROMPT, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_and_stream_agree(client, model_id, idle):
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model=model_id, messages=messages, max_tokens=10, temperature=0)
    msg = whole.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert whole.usage.completion_tokens <= 10
    stream = client.chat.completions.create(model=model_id, messages=messages, max_tokens=10, temperature=0,
                                            stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == msg.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_max_completion_tokens_and_content_parts(client, model_id, idle):
    r = client.chat.completions.create(
        model=model_id, max_completion_tokens=3, temperature=0,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": "hi"}]}])
    assert r.usage.completion_tokens <= 3


def test_stop_string(client, model_id, idle):
    free = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = free[free.index(" ", 4):][:5]  # a stop string from inside the greedy text, after a space
    expected = free[: free.index(stop)]
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == expected
    streamed = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=12, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected


def test_n_and_seed(client, model_id, idle):
    kwargs = dict(model=model_id, prompt="My favourite animal is the", max_tokens=5, temperature=1.0, n=3, seed=1234)
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.usage.completion_tokens == 15
    chat = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, n=2, seed=7, stream=True)
    texts = {0: "", 1: ""}
    finished = []
    for chunk in chat:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.append(c.index)
    assert sorted(finished) == [0, 1]


def test_multiple_prompts(client, model_id, idle):
    r = client.completions.create(model=model_id, prompt=[PROMPT, "One, two, three,"], max_tokens=4,
                                  temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text  # greedy: both samples of a prompt agree
    assert "France" in r.choices[0].text
    ids = client.completions.create(model=model_id, prompt=[2, 9079, 563, 506, 5279, 529], max_tokens=2,
                                    temperature=0)
    assert ids.usage.prompt_tokens == 6


def test_completion_logprobs(client, model_id, idle):
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert "".join(lp.tokens) == r.choices[0].text
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(value)  # greedy: the sampled token is the most likely
    assert lp.text_offset[0] == 0


def test_chat_logprobs(client, model_id, idle):
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hello"}],
                                       max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    streamed = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hello"}],
                                              max_tokens=3, temperature=0, logprobs=True, top_logprobs=1,
                                              stream=True)
    tokens = [e.token for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert tokens == [e.token for e in content]


def test_echo(client, model_id, idle):
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=3, temperature=0, echo=True)
    assert r.choices[0].text.startswith(PROMPT) and len(r.choices[0].text) > len(PROMPT)
    # echo + logprobs (prompt logprobs): tests/server/test_openai_prompt_logprobs.py


@pytest.mark.parametrize("kwargs, param, code", [
    (dict(model="gpt-4"), "model", "model_not_found"),
    (dict(max_tokens=5000), "max_tokens", "context_length_exceeded"),
    (dict(prompt="word " * 1100), "prompt", "context_length_exceeded"),
    (dict(temperature=-1), "temperature", None),
    (dict(top_p=0), "top_p", None),
    (dict(n=0), "n", None),
    (dict(logprobs=50), "logprobs", None),
    (dict(stop=[""]), "stop", None),
    (dict(prompt=[300000]), "prompt", None),
    (dict(logit_bias={"5": 1}), "logit_bias", "unsupported_parameter"),
])
def test_completion_errors(client, model_id, kwargs, param, code):
    args = {"model": model_id, "prompt": "hi", "max_tokens": 2, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(**args)
    err = e.value.body
    assert e.value.status_code == 400
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param and err["code"] == code
    assert len(err["message"]) < 1000  # the 1100-word prompt is not echoed


def test_chat_errors(client, model_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id, messages=[])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "x " * 2000}],
                                       max_completion_tokens=10)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:  # Gemma's template wants alternating turns
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "a"},
                                                                 {"role": "user", "content": "b"}])
    assert e.value.body["code"] == "chat_template_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "a"}], top_logprobs=2)
    assert e.value.body["param"] == "top_logprobs"


def test_invalid_json_and_huge_invalid_input_not_echoed(live, model_id):
    r = httpx.post(live.url + "/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    huge = "Z" * 500_000
    r = httpx.post(live.url + "/v1/completions", json={"model": model_id, "prompt": "hi", "max_tokens": huge})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "max_tokens"
    assert len(r.content) < 2000 and "ZZZZ" not in r.text


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", b'{"model": "M", "messages": [{"role": "user", "content": "a\\udc80"}]}'),
    ("/v1/completions", b'{"model": "M", "prompt": "x", "stop": ["\\ud800"]}'),
    ("/api/generate", b'{"model": "M", "prompt": "a\\ud800", "stream": false}'),
])
def test_unpaired_surrogates_are_invalid_requests(live, model_id, path, body):
    # JSON can escape a lone surrogate; no UTF-8 text (or tokenizer) can hold one.
    r = httpx.post(live.url + path, content=body.replace(b"M", model_id.encode()),
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "surrogate" in r.text


def test_sse_framing_and_utf8(live, model_id, idle):
    body = {"model": model_id, "prompt": "東京は日本の首都です。大阪は", "max_tokens": 12, "temperature": 0,
            "echo": True, "stream": True}
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        raw = b"".join(r.iter_bytes())
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    texts = []
    for event in events[:-2]:
        assert event.startswith(b"data: ")
        texts.append(json.loads(event[6:].decode("utf-8"))["choices"][0]["text"])  # each event is whole UTF-8
    assert "".join(texts).startswith("東京は日本の首都です。大阪は")
    assert "\ufffd" not in "".join(texts)


def test_extreme_but_valid_values_do_not_break_the_engine(client, model_id, engine, idle):
    # top_k far beyond the vocabulary means "off"; it once overflowed int32 in the engine thread,
    # which killed the engine for every request (found by the schemathesis run).
    r = client.completions.create(model=model_id, prompt="Hi", max_tokens=2, seed=-5, n=2, temperature=2.0,
                                  presence_penalty=-2, extra_body={"top_k": 10**22, "repetition_penalty": 10.0})
    assert len(r.choices) == 2
    assert engine.dead is None
