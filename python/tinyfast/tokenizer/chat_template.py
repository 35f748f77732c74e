"""Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template` or
tokenizer_config.json), rendered the way `transformers` renders it, with built-in templates for
files that ship none.

Templates come from model files, so they run in Jinja's immutable sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROLES = ("system", "user", "assistant", "tool")


class ChatTemplateError(ValueError):
    """The template rejected the conversation (its `raise_exception`) or failed to render."""


# Gemma's format: no system role, so a system message is folded into the first user turn;
# the assistant is "model". Same output as Gemma 3's own template for text-only messages.
GEMMA_TEMPLATE = """{{- bos_token -}}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if message['role'] not in ('user', 'assistant') -%}
        {{- raise_exception('Gemma chat supports a first system message, then user and assistant messages only, not ' + message['role']) -}}
    {%- endif -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') -}}
    {{- message['content'] | trim -}}
    {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""

CHATML_TEMPLATE = """{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""

BUILTIN_TEMPLATES = {
    "gemma": GEMMA_TEMPLATE,
    "gemma2": GEMMA_TEMPLATE,
    "gemma3": GEMMA_TEMPLATE,
    "gemma3_text": GEMMA_TEMPLATE,
    "qwen2": CHATML_TEMPLATE,
    "qwen2moe": CHATML_TEMPLATE,
    "qwen3": CHATML_TEMPLATE,
    "qwen3moe": CHATML_TEMPLATE,
}


def builtin_template(architecture: str | None) -> str | None:
    """The template used for an architecture whose file ships none, or None."""
    return BUILTIN_TEMPLATES.get(architecture or "")


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False
) -> str:
    # transformers' filter: no ASCII escaping, unlike Jinja's built-in HTML-safe tojson.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template does not parse: {e}") from e


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Check a conversation and return it as a list of plain dicts.

    Each message needs a known role and string content. The one exception: an assistant message
    that carries `tool_calls` may have no content.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise ValueError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, not {type(messages).__name__}"
        )
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', not {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        tool_call_only = role == "assistant" and message.get("tool_calls") and content is None
        if not isinstance(content, str) and not tool_call_only:
            raise ValueError(f"message {i} ({role}) must have string content, not {type(content).__name__}")
        out.append(dict(message))
    if not out:
        raise ValueError("messages is empty: a conversation needs at least one message")
    return out


class ChatTemplate:
    """A compiled chat template with the special-token strings it may refer to."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        if not isinstance(source, str) or not source.strip():
            raise ValueError("chat template source must be a non-empty string")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(source)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        messages = validate_messages(messages)
        context = {"bos_token": self.bos_token, "eos_token": self.eos_token, **kwargs}
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, tools=tools, **context
            )
        except (jinja2.TemplateError, TypeError) as e:  # TypeError: e.g. str + None inside the template
            raise ChatTemplateError(f"chat template: {e}") from e
