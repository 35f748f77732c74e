"""Tokenizers for tinyfast: GGUF or HuggingFace vocabularies, streaming detokenization, and Jinja
chat templates. GGUF SentencePiece vocabularies encode with the native `tinyfast._C.SpmTokenizer`,
the rest with HuggingFace `tokenizers`; nothing else in tinyfast is used."""

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
