"""The Ollama routes over plain HTTP (httpx), as Ollama's own clients and `curl -d` send them."""

from __future__ import annotations

import json

import httpx
import pytest


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def _lines(r: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in r.text.splitlines() if line]


def test_generate_streams_ndjson_by_default(http, model_id, idle):
    r = http.post("/api/generate", json={"model": model_id, "prompt": "Why is the sky blue?",
                                         "options": {"num_predict": 5, "temperature": 0}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = _lines(r)
    assert all(not x["done"] for x in lines[:-1]) and lines[-1]["done"]
    final = lines[-1]
    assert final["done_reason"] == "length" and final["eval_count"] == 5
    assert final["prompt_eval_count"] > 0 and final["total_duration"] > 0
    text = "".join(x["response"] for x in lines)
    whole = http.post("/api/generate", json={"model": model_id, "prompt": "Why is the sky blue?", "stream": False,
                                             "options": {"num_predict": 5, "temperature": 0}}).json()
    assert whole["response"] == text and whole["done"] is True


def test_generate_raw_and_curl_form_content_type(http, model_id, idle):
    body = json.dumps({"model": model_id + ":latest", "prompt": "Paris is the capital of", "raw": True,
                       "stream": False, "options": {"num_predict": 3, "temperature": 0, "stop": ["."]}})
    # `curl -d` sends application/x-www-form-urlencoded; Ollama reads the body as JSON anyway.
    r = http.post("/api/generate", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert "France" in r.json()["response"]


def test_generate_empty_prompt_is_a_load(http, model_id):
    r = http.post("/api/generate", json={"model": model_id, "stream": False})
    assert r.json()["done"] is True and r.json()["done_reason"] == "load"


def test_chat_stream_and_whole(http, model_id, idle):
    messages = [{"role": "user", "content": "Name a colour."}]
    opts = {"num_predict": 6, "temperature": 0}
    r = http.post("/api/chat", json={"model": model_id, "messages": messages, "options": opts})
    lines = _lines(r)
    assert lines[-1]["done"] and lines[-1]["message"] == {"role": "assistant", "content": ""}
    text = "".join(x["message"]["content"] for x in lines)
    whole = http.post("/api/chat", json={"model": model_id, "messages": messages, "options": opts,
                                         "stream": False}).json()
    assert whole["message"]["role"] == "assistant" and whole["message"]["content"] == text
    assert whole["eval_count"] <= 6


def test_tags_show_version(http, model_id):
    tags = http.get("/api/tags").json()
    (entry,) = tags["models"]
    assert entry["name"] == model_id and entry["details"]["family"] == "gemma3"
    assert entry["details"]["quantization_level"] == "Q4_K_M" and entry["size"] > 100_000_000
    show = http.post("/api/show", json={"model": model_id}).json()
    assert show["details"]["format"] == "gguf" and show["model_info"]["general.architecture"] == "gemma3"
    assert "start_of_turn" in show["template"]
    assert http.get("/api/version").json()["version"]
    assert http.get("/api/ps").json()["models"][0]["name"] == model_id


def test_errors_are_ollama_shaped(http, model_id):
    r = http.post("/api/show", json={"model": "llama3"})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = http.post("/api/generate", json={"model": "llama3", "prompt": "hi"})
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = http.post("/api/chat", json={"model": model_id, "messages": [{"role": "user", "content": "hi"}],
                                     "options": {"temperature": "hot"}})
    assert r.status_code == 400 and "temperature" in r.json()["error"]
    r = http.post("/api/chat", json={"model": model_id, "messages": [{"role": "user", "content": "x " * 2000}],
                                     "options": {"num_predict": 10}})
    assert r.status_code == 400 and "context length" in r.json()["error"]
    r = http.post("/api/generate", json={"model": model_id, "prompt": "hi", "format": "json"})
    assert r.status_code == 400 and "format" in r.json()["error"]
    r = http.post("/api/generate", content=b"{oops")
    assert r.status_code == 400 and "JSON" in r.json()["error"]
