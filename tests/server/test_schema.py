"""schemathesis against /openapi.json, in process: no 5xx, responses match the published schema
(status codes, content types, JSON bodies, each SSE event), and requests the schema rejects are
rejected.

Bounded run: a few examples per operation and direction (valid / invalid data), with generation
lengths, n and prompt counts clamped so a generated request costs a few tokens (the model is
real); TINYFAST_SCHEMA_EXAMPLES raises the count. The schema states every syntactic rule the
server enforces (model ids, token-id range, parameter bounds); what it cannot state is checked by
a custom check in place of `positive_data_acceptance`: a schema-valid request may be refused only
for one of ALLOWED_REFUSALS.

Operations are driven with `operation.as_strategy()` and Hypothesis directly: schemathesis'
lazy pytest loader (`schemathesis.pytest.from_fixture`) fails on pytest 9 (`Function._nodeid`).
"""

from __future__ import annotations

import copy
import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance  # noqa: E402

# Refusals of schema-valid requests for reasons JSON Schema does not state: the prompt's length
# in tokens, the model's chat template (Gemma: alternating user/assistant turns), and parameter
# combinations (top_logprobs without logprobs; max_tokens 0 without echo; prompt_logprobs with stream).
ALLOWED_REFUSALS = {"context_length_exceeded", "chat_template_error", "invalid_parameter_combination",
                    "unsupported_parameter"}
MAX_GENERATED_TOKENS = 2
MAX_N = 3
MAX_PROMPTS = 3


# Every operation of the published schema; test_every_operation_is_tested keeps this list complete.
OPERATIONS = [
    ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"), ("POST", "/api/generate"), ("POST", "/api/chat"), ("GET", "/api/tags"),
    ("GET", "/api/ps"), ("POST", "/api/show"), ("GET", "/api/version"), ("GET", "/health"), ("GET", "/metrics"),
]
WITH_INPUT = {op for op in OPERATIONS if op[0] == "POST"}  # a path's {model} takes any string
# Bounded for the suite's time budget; TINYFAST_SCHEMA_EXAMPLES=200 runs a deeper search.
EXAMPLES = {"POST": int(os.environ.get("TINYFAST_SCHEMA_EXAMPLES", 10)), "GET": 3}


@pytest.fixture(scope="module")
def api_schema(engine, model_id):
    from tinyfast.server import create_app

    app = create_app(engine, model_id, warmup=False, max_queue=64)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_tested(api_schema):
    published = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert published == set(OPERATIONS)


@schemathesis.check
def refused_only_for_unstated_reasons(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    if response.headers.get("content-type", [""])[0].startswith("application/json"):
        body = response.json()
        err = body.get("error")
        code = err.get("code") if isinstance(err, dict) else None
        if code in ALLOWED_REFUSALS:
            return None
        if isinstance(err, str) and ("context length" in err or "chat template" in err):
            return None
    raise AssertionError(f"schema-valid request refused: {response.status_code} {response.text[:300]}")


def _clamp(case) -> None:
    """Keeps each generated request to a few tokens of work: the schema allows 32 prompts x n=16
    (512 sequences), which is a load test on two cores, not a conformance check."""
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("n"), int) and not isinstance(body["n"], bool) and body["n"] > MAX_N:
        body["n"] = MAX_N
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        del prompt[MAX_PROMPTS:]
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int) and not isinstance(body.get(name), bool) and body[name] > 0:
            body[name] = min(body[name], MAX_GENERATED_TOKENS)
    if "max_tokens" in body and body["max_tokens"] is None:
        body["max_tokens"] = MAX_GENERATED_TOKENS
    if case.path == "/v1/chat/completions" and body.get("max_completion_tokens") is None \
            and body.get("max_tokens") is None and "max_tokens" not in body:
        body["max_completion_tokens"] = MAX_GENERATED_TOKENS
    if case.path in ("/api/generate", "/api/chat"):
        options = body.get("options")
        if options is None:
            body["options"] = {"num_predict": MAX_GENERATED_TOKENS}
        elif isinstance(options, dict):
            n = options.get("num_predict")
            if n is None or (isinstance(n, int) and not isinstance(n, bool) and (n < 0 or n > MAX_GENERATED_TOKENS)):
                options["num_predict"] = MAX_GENERATED_TOKENS


@pytest.mark.parametrize("method, path, mode", [(m, p, "positive") for m, p in OPERATIONS]
                         + [(m, p, "negative") for m, p in OPERATIONS if (m, p) in WITH_INPUT])
def test_api_conforms_to_its_schema(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    # No shrinking: a failure is reported as found (shrinking replays model requests for minutes).
    @settings(max_examples=EXAMPLES[method], deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case):
        before = copy.deepcopy(case.body)
        _clamp(case)
        excluded = [positive_data_acceptance]
        if mode == "negative" and case.body != before:
            # Clamping may have removed the very violation (n over its maximum, too many
            # prompts) that made the case negative; the request is then valid and must not be
            # counted as "schema-violating data accepted". Every other check still applies.
            excluded.append(negative_data_rejection)
        case.call_and_validate(excluded_checks=excluded,
                               additional_checks=[refused_only_for_unstated_reasons], timeout=60)

    run()
