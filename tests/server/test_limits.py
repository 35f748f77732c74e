"""API key, body cap, CORS, the bounded queue under a flood, client disconnects, /metrics."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import ServerThread, wait_until

openai = pytest.importorskip("openai")

KEY = "sekret-key"


@pytest.fixture(scope="module")
def guarded(engine, model_id):
    from tinyfast.server import create_app

    app = create_app(engine, model_id, api_key=KEY, max_body_bytes=4096, allowed_origins=["http://localhost:3000"],
                     warmup=False)
    srv = ServerThread(app)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def small_queue(engine, model_id):
    from tinyfast.server import create_app

    srv = ServerThread(create_app(engine, model_id, max_queue=2, warmup=False))
    yield srv
    srv.stop()


# --- API key, body cap, CORS ----------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/metrics"),
                                          ("GET", "/api/tags"), ("POST", "/api/chat"), ("GET", "/openapi.json")])
def test_api_key_required_everywhere_but_health(guarded, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.request(method, guarded.url + path, headers=headers, json={})
        assert r.status_code == 401, (path, headers)
        err = r.json()["error"]
        assert (err if path.startswith("/api/") else err["message"]).startswith("missing or wrong API key")
    assert httpx.get(guarded.url + "/health").status_code == 200


def test_api_key_with_openai_client(guarded, model_id):
    bad = openai.OpenAI(base_url=guarded.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=guarded.url + "/v1", api_key=KEY, max_retries=0)
    assert good.models.list().data[0].id == model_id
    r = good.completions.create(model=model_id, prompt="Hi", max_tokens=1)
    assert r.usage.completion_tokens == 1


def test_body_cap(guarded, model_id):
    auth = {"Authorization": f"Bearer {KEY}"}
    big = {"model": model_id, "prompt": "a" * 5000}
    r = httpx.post(guarded.url + "/v1/completions", json=big, headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the cap is enforced while reading
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(guarded.url + "/v1/completions", content=chunked(), headers=auth)
    assert r.status_code == 413
    r = httpx.post(guarded.url + "/api/generate", json=big, headers=auth)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_cors_only_for_allowed_origins(guarded, live):
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(guarded.url + "/v1/chat/completions", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    r = httpx.options(guarded.url + "/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(live.url + "/v1/models", headers={"Origin": "http://localhost:3000"})
    assert "access-control-allow-origin" not in r.headers  # CORS is off by default


# --- the bounded queue ----------------------------------------------------------------------------


def test_flood_gets_429_with_retry_after_and_server_keeps_serving(small_queue, model_id, engine, idle):
    url = small_queue.url
    n = 10
    barrier = threading.Barrier(n)

    def one(i: int):
        body = {"model": model_id, "prompt": f"Count to {i}:", "max_tokens": 8, "temperature": 0,
                "stream": i % 2 == 1}
        path = "/v1/completions"
        if i % 3 == 0:
            body = {"model": model_id, "prompt": f"Count to {i}:", "stream": i % 2 == 1,
                    "options": {"num_predict": 8}}
            path = "/api/generate"
        barrier.wait()
        r = httpx.post(url + path, json=body, timeout=60)
        return path, r.status_code, r.headers.get("retry-after"), r.text

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    codes = [code for _, code, _, _ in results]
    assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
    assert set(codes) <= {200, 429}, results
    for path, code, retry_after, text in results:
        if code == 429:
            assert retry_after is not None and int(retry_after) >= 1
            assert "queue is full" in text
    # Everything finished and released its place: the server serves again.
    r = httpx.post(url + "/v1/completions", json={"model": model_id, "prompt": "Hi", "max_tokens": 2}, timeout=60)
    assert r.status_code == 200
    metrics = httpx.get(url + "/metrics").text
    assert 'tinyfast_requests_rejected_total{reason="queue_full"}' in metrics


# --- client disconnects free KV blocks ------------------------------------------------------------

LONG = {"max_tokens": 400, "ignore_eos": True, "temperature": 0.7}


@pytest.mark.parametrize("api", ["openai-stream", "ollama-stream"])
def test_streaming_disconnect_aborts_and_frees_blocks(live, model_id, engine, blocks_used, idle, api):
    if api == "openai-stream":
        path, body = "/v1/completions", {"model": model_id, "prompt": "Tell a long story:", "stream": True, **LONG}
    else:
        path, body = "/api/generate", {"model": model_id, "prompt": "Tell a long story:",
                                       "options": {"num_predict": 400, "temperature": 0.7}}
    with httpx.stream("POST", live.url + path, json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = 0
        for line in r.iter_lines():
            lines += bool(line)
            if lines == 3:
                break
        assert blocks_used() > 0 and engine.engine.has_unfinished_requests()
    closed = time.monotonic()  # leaving the block closed the connection mid-stream
    assert wait_until(lambda: blocks_used() == 0 and not engine.engine.has_unfinished_requests(), timeout=10)
    assert time.monotonic() - closed < 5  # 400 tokens would take far longer: it was aborted


def test_non_streaming_disconnect_aborts_and_frees_blocks(live, model_id, engine, blocks_used, idle):
    body = {"model": model_id, "messages": [{"role": "user", "content": "Tell a long story."}], **LONG}
    seen_busy = []

    def watch():
        seen_busy.append(wait_until(lambda: blocks_used() > 0, timeout=10))

    t = threading.Thread(target=watch)
    t.start()
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1.5 s and closes the connection
        httpx.post(live.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=1.5))
    closed = time.monotonic()
    t.join()
    assert seen_busy == [True]
    assert wait_until(lambda: blocks_used() == 0 and not engine.engine.has_unfinished_requests(), timeout=10)
    assert time.monotonic() - closed < 5


# --- /metrics -------------------------------------------------------------------------------------


def test_metrics(live, model_id, idle):
    from prometheus_client.parser import text_string_to_metric_families

    prompt = "The history of the printing press begins in the fifteenth century, when " * 3
    for _ in range(2):  # the second request hits the prefix cache
        r = httpx.post(live.url + "/v1/completions", json={"model": model_id, "prompt": prompt, "max_tokens": 3},
                       timeout=60)
        assert r.status_code == 200
    r = httpx.get(live.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("tinyfast_time_to_first_token_seconds_count") >= 2
    assert value("tinyfast_inter_token_latency_seconds_count") >= 4
    assert value("tinyfast_request_latency_seconds_count") >= 2
    assert value("tinyfast_requests_total", api="completions", finish_reason="length") >= 2
    assert value("tinyfast_http_requests_total", method="POST", route="/v1/completions", status="200") >= 2
    assert value("tinyfast_generation_tokens_total") >= 6
    assert value("tinyfast_generation_tokens_per_second") > 0
    assert value("tinyfast_prefix_cache_hits_total") > 0
    assert 0 < value("tinyfast_prefix_cache_hit_rate") <= 1
    assert value("tinyfast_num_requests_running") == 0 and value("tinyfast_num_requests_waiting") == 0
    assert value("tinyfast_kv_cache_usage_ratio") == 0
    assert value("tinyfast_kv_cache_blocks_total") == 256
    looked_ahead = value("tinyfast_decode_lookahead_used_total") + value("tinyfast_decode_lookahead_dropped_total")
    assert 0 <= looked_ahead <= value("tinyfast_engine_steps_total")
    assert value("tinyfast_server_requests_in_flight") == 0
