"""Tokenizers for tinyfast: GGUF or HuggingFace vocabularies on HuggingFace `tokenizers`,
streaming detokenization, and Jinja chat templates. Depends on nothing else in tinyfast."""

from .chat_template import ChatTemplate, ChatTemplateError, builtin_template, validate_messages
from .detokenizer import IncrementalDetokenizer, TokenPieces
from .gguf_tokenizer import build_hf_tokenizer, parse_gguf_vocab
from .tokenizer import Tokenizer

__all__ = [
    "ChatTemplate",
    "ChatTemplateError",
    "IncrementalDetokenizer",
    "TokenPieces",
    "Tokenizer",
    "build_hf_tokenizer",
    "builtin_template",
    "parse_gguf_vocab",
    "validate_messages",
]
