"""Request and response bodies of the OpenAI routes (pydantic; they are the published schema).

Requests validate strictly (a string is not a number, 1.0 is not an integer): every constraint in
`/openapi.json` is enforced, so a request the schema rejects is rejected. Fields the schema does
not name are kept (`extra="allow"`) so clients that send more than we use keep working; the few
that would change the result if ignored (`logit_bias`, `tools`, ...) are refused by the handlers.
The model id and the token-id range depend on the loaded model: the app writes them into the
published schema (`app.openapi`) and the handlers enforce them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tinyfast.sampling_params import MAX_LOGPROBS

MAX_N = 16
MAX_STOP = 16
MAX_PROMPTS = 32



def _whole_number(value: Any) -> Any:
    # JSON Schema's "integer" includes 12.0; strict pydantic would refuse it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WHOLE = BeforeValidator(_whole_number)
"""After the constraints in `Annotated[int, Field(ge=...), WHOLE]`: an integer field that also
accepts whole floats (1.0), never strings or booleans. (Placed before them, pydantic would publish
the bounds as non-standard `ge`/`le` keywords instead of `minimum`/`maximum`.)"""
NonEmptyStr = Annotated[str, Field(min_length=1)]
TokenId = Annotated[int, Field(ge=0), WHOLE]
StopField = Union[NonEmptyStr, Annotated[list[NonEmptyStr], Field(max_length=MAX_STOP)], None]


class StrictRequest(BaseModel):
    """Base of every request body: strict types, unknown fields kept, and no string anywhere in the
    body (values or keys) with an unpaired UTF-16 surrogate: JSON can escape one (\\ud800) but no
    UTF-8 text holds it, so the tokenizer and the response encoder would fail on it."""

    model_config = ConfigDict(strict=True, extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        _check_encodable(data)
        return data


def _check_encodable(value: Any, depth: int = 0) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string contains an unpaired UTF-16 surrogate (e.g. \\ud800), "
                             "which is not valid Unicode text") from None
    elif depth < 64 and isinstance(value, dict):
        for k, v in value.items():
            _check_encodable(k, depth + 1)
            _check_encodable(v, depth + 1)
    elif depth < 64 and isinstance(value, list):
        for v in value:
            _check_encodable(v, depth + 1)


_Request = StrictRequest


class StreamOptions(_Request):
    include_usage: bool = False


class _SamplingFields(_Request):
    """Sampling fields shared by both generation routes (OpenAI names, plus vLLM's extras)."""

    model: str = Field(description="a model id from GET /v1/models")
    n: Annotated[int, Field(ge=1, le=MAX_N), WHOLE] = 1
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: Annotated[int, Field(ge=-1), WHOLE] | None = Field(None, description="0 or -1: off (vLLM extension)")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="vLLM extension")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0, description="vLLM extension")
    seed: Annotated[int, WHOLE] | None = Field(None, description="any integer; taken modulo 2**64")
    stop: StopField = None
    stop_token_ids: Annotated[list[TokenId], Field(max_length=MAX_STOP)] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    prompt_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), WHOLE] | None = Field(
        None, description="vLLM extension: per prompt token after the first, its logprob and this many "
                          "alternatives (`prompt_logprobs` in the response); not with `stream`")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class CompletionRequest(_SamplingFields):
    prompt: Union[
        NonEmptyStr,
        Annotated[list[NonEmptyStr], Field(min_length=1, max_length=MAX_PROMPTS)],
        Annotated[list[TokenId], Field(min_length=1)],
        Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=MAX_PROMPTS)],
    ]
    max_tokens: Annotated[int, Field(ge=0), WHOLE] | None = Field(
        16, description="default 16; null: up to the context length; 0 (with `echo`): score the prompt only")
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), WHOLE] | None = None


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, Annotated[list[TextPart], Field(min_length=1)]]
    name: str | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1), WHOLE] | None = Field(
        None, description="deprecated alias of max_completion_tokens")
    max_completion_tokens: Annotated[int, Field(ge=1), WHOLE] | None = Field(
        None, description="null: up to the context length")
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), WHOLE] | None = None


# --- responses -----------------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class PromptLogprob(BaseModel):
    """vLLM's shape of one token's entry in `prompt_logprobs` (keyed by token id)."""

    logprob: float
    rank: int | None = None
    decoded_token: str


PromptLogprobs = list[dict[str, PromptLogprob] | None]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    prompt_logprobs: PromptLogprobs | None = Field(None, description="with `prompt_logprobs` (vLLM extension)")


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: PromptLogprobs | None = Field(None, description="with `prompt_logprobs` (vLLM extension)")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tinyfast"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def extra_fields(req: BaseModel) -> dict[str, Any]:
    return dict(req.model_extra or {})


# --- stream chunks (SSE events `data: <chunk>`, then `data: [DONE]`) --------------------------


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


def sse_event_schema(chunk: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event (OpenAPI 3.1: a sequential media type's `schema` describes each event):
    `data` is a JSON chunk, an in-band error, or the final `[DONE]`."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [
            {"const": "[DONE]"},
            {"type": "string", "contentMediaType": "application/json",
             "contentSchema": {"anyOf": [{"$ref": f"#/components/schemas/{chunk.__name__}"},
                                         {"$ref": "#/components/schemas/ErrorResponse"}]}},
        ]}},
    }
