"""Chat templates: the Qwen template from the GGUF file, the built-in Gemma and ChatML ones,
the sandbox, and clear errors for bad conversations."""

from __future__ import annotations

import datetime

import pytest
from tinyfast.tokenizer import ChatTemplate, ChatTemplateError, builtin_template, validate_messages
from tinyfast.tokenizer.chat_template import CHATML_TEMPLATE, GEMMA_TEMPLATE

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]


def test_qwen_template_from_file(qwen_tok):
    expected = (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert qwen_tok.apply_chat_template(CONVERSATION) == expected
    assert qwen_tok.apply_chat_template(CONVERSATION, add_generation_prompt=False) == expected.removesuffix(
        "<|im_start|>assistant\n"
    )
    # no system message: the template writes Qwen's default one
    assert qwen_tok.apply_chat_template([{"role": "user", "content": "hi"}]) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = qwen_tok.apply_chat_template(CONVERSATION, tokenize=True)
    assert ids[:3] == [151644, 8948, 198] and ids.count(151645) == 4


def test_qwen_template_with_tools(qwen_tok):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "Zürich"}}}]
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}],
        },
        {"role": "tool", "content": "sunny"},
    ]
    text = qwen_tok.apply_chat_template(messages, tools=tools)
    assert '{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "Zürich"}}}' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text


def test_gemma_builtin_template(gemma_tok):
    assert gemma_tok.chat_template_source == GEMMA_TEMPLATE  # the file has none
    expected = (
        "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert gemma_tok.apply_chat_template(CONVERSATION) == expected
    ids = gemma_tok.apply_chat_template(CONVERSATION, tokenize=True)
    assert ids[:2] == [2, 105] and ids.count(2) == 1  # one BOS: the template's
    assert gemma_tok.apply_chat_template([{"role": "user", "content": "  hi \n"}], add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nhi<end_of_turn>\n"
    )


def test_gemma_template_rejects_what_gemma_cannot_express(gemma_tok):
    with pytest.raises(ChatTemplateError, match="alternate"):
        gemma_tok.apply_chat_template([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="alternate"):
        gemma_tok.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ChatTemplateError, match="not tool"):
        gemma_tok.apply_chat_template([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])


def test_chatml_builtin():
    assert builtin_template("qwen2") == CHATML_TEMPLATE and builtin_template("gemma3") == GEMMA_TEMPLATE
    assert builtin_template("mamba") is None
    text = ChatTemplate(CHATML_TEMPLATE).render(CONVERSATION[:2])
    assert text == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_globals():
    source = (
        "{{ bos_token }}{% for m in messages %}{{ m.content | tojson }}{% endfor %}"
        "{{ eos_token }}|{{ strftime_now('%Y') }}|{{ extra }}"
    )
    text = ChatTemplate(source, bos_token="<s>", eos_token="</s>").render([{"role": "user", "content": "é\n"}], extra=7)
    assert text == f'<s>"é\\n"</s>|{datetime.date.today().year}|7'


@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "empty"),
        ("hello", "must be a list"),
        (None, "must be a list"),
        (["hello"], "message 0 must be a dict"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"content": "x"}], "role None"),
        ([{"role": "user", "content": 3}], "string content, not int"),
        ([{"role": "user", "content": [{"type": "text", "text": "x"}]}], "string content, not list"),
        ([{"role": "user"}], "string content, not NoneType"),
        ([{"role": "user", "content": "ok"}, {"role": "assistant", "content": None}], "message 1"),
    ],
)
def test_bad_messages(messages, message):
    with pytest.raises(ValueError, match=message):
        validate_messages(messages)
    with pytest.raises(ValueError, match=message):
        ChatTemplate(CHATML_TEMPLATE).render(messages)


def test_template_errors_are_value_errors():
    with pytest.raises(ChatTemplateError, match="no thanks"):
        ChatTemplate("{{ raise_exception('no thanks') }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate("{% for %}")
    with pytest.raises(ValueError):
        ChatTemplate("")
    assert issubclass(ChatTemplateError, ValueError)


def test_sandbox():
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(ChatTemplateError):  # the immutable sandbox forbids mutating arguments
        ChatTemplate("{{ messages.append(1) }}").render(messages)
    with pytest.raises(ChatTemplateError, match="unsafe"):  # no walking to Python internals
        ChatTemplate("{{ messages.__class__.__mro__ }}").render(messages)
    assert messages == [{"role": "user", "content": "x"}]


def test_no_template_is_a_clear_error():
    from tinyfast.tokenizer import Tokenizer

    meta = {
        "general.architecture": "mamba",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b"],
        "tokenizer.ggml.merges": [],
    }
    tok = Tokenizer.from_gguf_metadata(meta)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])
