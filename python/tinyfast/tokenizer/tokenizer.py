"""The tokenizer the engine uses: encode, decode, stream, stop tokens and chat template.

Built either from GGUF metadata (`from_gguf_metadata`) or from a HuggingFace checkpoint directory
(`from_hf_dir`: tokenizer.json + tokenizer_config.json). GGUF SentencePiece ("llama") vocabularies
encode natively (`tinyfast._C.SpmTokenizer`: building the equivalent `tokenizers` BPE takes seconds
for a 262k vocabulary); everything else encodes in HuggingFace `tokenizers`. Decoding uses per-token
byte pieces (see detokenizer.py) so streamed and one-shot text agree.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tokenizers import processors

from tinyfast import _C

from .chat_template import ChatTemplate, builtin_template
from .detokenizer import (
    IncrementalDetokenizer,
    TokenPieces,
    WindowDetokenizer,
    byte_level_decoder,
    sentencepiece_piece,
)
from .gguf_tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    UNUSED,
    GGUFVocab,
    build_hf_tokenizer,
    gpt2_byte_alphabet,
    parse_gguf_vocab,
)

# Tokens that end an assistant turn: stop on them when the chat template writes them.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<|return|>", "<EOT>")
# Tokens that end a document: always a stop when they are special tokens of the vocabulary.
END_OF_TEXT_TOKENS = ("<|endoftext|>",)

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class Tokenizer:
    """Text <-> token ids for one model. Build with `from_gguf_metadata` or `from_hf_dir`."""

    def __init__(
        self,
        hf: tokenizers.Tokenizer | Callable[[], tokenizers.Tokenizer],
        *,
        tokens: list[str | None],
        special_ids: Iterable[int],
        pieces: TokenPieces | None,
        bos_token_id: int | None,
        eos_token_id: int | None,
        extra_eos_token_ids: Iterable[int] = (),
        pad_token_id: int | None = None,
        chat_template: str | None = None,
        architecture: str | None = None,
        native: _C.SpmTokenizer | None = None,
    ):
        """`hf` is the `tokenizers.Tokenizer`, or a function that builds it on first use of `.hf`
        when `native` encodes and `pieces` decode (nothing else then needs it)."""
        self._hf = hf if isinstance(hf, tokenizers.Tokenizer) else None
        self._hf_factory = None if self._hf is not None else hf
        self._hf_lock = threading.Lock()
        if native is None and self._hf is None:
            raise ValueError("a Tokenizer without a native encoder needs its tokenizers.Tokenizer up front")
        self._native = native
        self._tokens = tokens
        self._ids = None if native is not None else _first_ids(tokens)
        self.special_ids = frozenset(special_ids)
        self._pieces = pieces
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.architecture = architecture
        self.chat_template_source = chat_template or builtin_template(architecture)
        self._chat_template: ChatTemplate | None = None
        self._lock = threading.Lock()
        self.eos_token_ids = self._stop_ids(extra_eos_token_ids)
        first = self.encode("", add_special_tokens=True)
        self.add_bos = bos_token_id is not None and first[:1] == [bos_token_id]

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        """From a GGUF file's metadata mapping (`tokenizer.ggml.*`, `tokenizer.chat_template`,
        `general.architecture`)."""
        vocab = parse_gguf_vocab(meta)
        types = np.asarray(vocab.token_types, dtype=np.int32)
        special = np.flatnonzero(np.isin(types, (CONTROL, UNKNOWN, UNUSED))).tolist()
        native = None
        if vocab.model == "llama":
            native = _native_spm(vocab, types)
            # Keeps the metadata's compact arrays for later, not the parsed vocabulary's lists.
            saved = dict(meta)
            hf: tokenizers.Tokenizer | Callable[[], tokenizers.Tokenizer] = lambda: build_hf_tokenizer(saved)
            pieces = TokenPieces.build(native.pieces(), special, strip_leading_space=vocab.add_space_prefix)
        else:
            hf = build_hf_tokenizer(vocab)
            pieces = _gguf_pieces(vocab, special)
        return cls(
            hf,
            tokens=vocab.tokens,
            special_ids=special,
            pieces=pieces,
            bos_token_id=vocab.bos_token_id,
            eos_token_id=vocab.eos_token_id,
            extra_eos_token_ids=vocab.eot_token_ids,
            pad_token_id=vocab.pad_token_id,
            chat_template=vocab.chat_template,
            architecture=vocab.architecture,
            native=native,
        )

    @property
    def hf(self) -> tokenizers.Tokenizer:
        """The equivalent `tokenizers.Tokenizer` (HF export, cross-checks). For GGUF SentencePiece
        vocabularies it is built on first access (seconds for 262k tokens); encoding, decoding
        and streaming never need it."""
        if self._hf is None:
            with self._hf_lock:
                if self._hf is None:
                    assert self._hf_factory is not None
                    self._hf = self._hf_factory()
        return self._hf

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Tokenizer:
        """From a HuggingFace checkpoint directory: tokenizer.json, tokenizer_config.json and,
        when present, chat_template.jinja, generation_config.json and config.json."""
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise ValueError(f"{path} has no tokenizer.json")
        hf = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        config = _read_json(path / "tokenizer_config.json")
        model_config = _read_json(path / "config.json")
        generation = _read_json(path / "generation_config.json")

        vocab = hf.get_vocab(with_added_tokens=True)
        size = max(vocab.values(), default=-1) + 1
        tokens: list[str | None] = [None] * size
        for t, i in vocab.items():
            tokens[i] = t
        added = hf.get_added_tokens_decoder()
        special = [i for i, t in added.items() if t.special]

        def token_id(value: Any) -> int | None:
            if isinstance(value, Mapping):
                value = value.get("content")
            return None if value is None else vocab.get(str(value))

        bos, eos = token_id(config.get("bos_token")), token_id(config.get("eos_token"))
        pad = token_id(config.get("pad_token"))
        if "add_bos_token" in config or "add_eos_token" in config:
            _set_post_processor(
                hf, tokens, bos if config.get("add_bos_token") else None, eos if config.get("add_eos_token") else None
            )

        extra = generation.get("eos_token_id", [])
        extra = [extra] if isinstance(extra, int) else list(extra)
        if eos is None and extra:
            eos = extra[0]
        return cls(
            hf,
            tokens=tokens,
            special_ids=special,
            pieces=_hf_pieces(json.loads(hf.decoder.__getstate__()) if hf.decoder else None, tokens, added, special),
            bos_token_id=bos,
            eos_token_id=eos,
            extra_eos_token_ids=extra,
            pad_token_id=pad,
            chat_template=_hf_chat_template(path, config),
            architecture=model_config.get("model_type"),
        )

    # --- encoding ------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`. `add_special_tokens` adds BOS (and EOS) as the vocabulary asks.
        With `parse_special=False`, control tokens written in the text (e.g. "<|im_end|>" typed by
        a user) are encoded as plain text instead of as the control token."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        if self._native is not None:
            return self._native.encode(text, add_special_tokens, parse_special)
        # One flag on the shared tokenizer switches special-token parsing; the lock keeps a flip
        # from racing an encode in another thread (copying a 262k-token tokenizer takes seconds).
        with self._lock:
            if not parse_special:
                self.hf.encode_special_tokens = True
            try:
                return self.hf.encode(text, add_special_tokens=add_special_tokens).ids
            finally:
                if not parse_special:
                    self.hf.encode_special_tokens = False

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        if self._native is not None:
            return self._native.encode_batch(list(texts), add_special_tokens)
        with self._lock:
            encodings = self.hf.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    # --- decoding ------------------------------------------------------------------------------

    def decode(self, ids: int | Iterable[int], skip_special_tokens: bool = True) -> str:
        if self._pieces is None:
            ids = [ids] if isinstance(ids, int) else list(ids)
            return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)
        return self._pieces.decode(ids, skip_special_tokens)

    def detokenizer(self, skip_special_tokens: bool = True, continuation: bool = False):
        """A fresh streaming decoder: `.add(ids) -> str` per step, `.finish() -> str` at the end."""
        if self._pieces is None:
            return WindowDetokenizer(lambda ids: self.hf.decode(ids, skip_special_tokens=skip_special_tokens))
        return IncrementalDetokenizer(self._pieces, skip_special_tokens=skip_special_tokens, continuation=continuation)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes token `token_id` stands for (special tokens: their text)."""
        if self._pieces is None:
            return self.hf.decode([token_id], skip_special_tokens=False).encode("utf-8")
        return self._pieces.join([token_id], skip_special_tokens=False)

    # --- vocabulary ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def id_to_token(self, token_id: int) -> str | None:
        """The token as the vocabulary spells it ("▁the", "Ġthe", "<0x0A>")."""
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {len(self._tokens)})")
        return self._tokens[token_id]

    def token_to_id(self, token: str) -> int | None:
        if self._native is not None:
            return self._native.token_to_id(token) if isinstance(token, str) else None
        assert self._ids is not None
        return self._ids.get(token)

    # --- chat ----------------------------------------------------------------------------------

    @property
    def chat_template(self) -> ChatTemplate:
        if self._chat_template is None:
            if self.chat_template_source is None:
                raise ValueError(
                    f"this model has no chat template and none is built in for architecture {self.architecture!r}"
                )
            name = lambda i: self._tokens[i] if i is not None and self._tokens[i] is not None else ""
            self._chat_template = ChatTemplate(
                self.chat_template_source, bos_token=name(self.bos_token_id), eos_token=name(self.eos_token_id)
            )
        return self._chat_template

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **kwargs: Any,
    ) -> str | list[int]:
        """Render `messages`; with `tokenize=True`, their token ids. The template writes BOS
        itself when the model wants one, so tokenizing adds no special tokens."""
        text = self.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # --- internals -----------------------------------------------------------------------------

    def _stop_ids(self, extra: Iterable[int]) -> frozenset[int]:
        stops = set(extra)
        if self.eos_token_id is not None:
            stops.add(self.eos_token_id)
        template = self.chat_template_source or ""
        for text in END_OF_TURN_TOKENS + END_OF_TEXT_TOKENS:
            i = self.token_to_id(text)
            if i is None or i not in self.special_ids:
                continue
            if text in END_OF_TEXT_TOKENS or text in template:
                stops.add(i)
        return frozenset(stops)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token_id}, "
            f"eos={sorted(self.eos_token_ids)}, arch={self.architecture!r})"
        )


def _first_ids(tokens: Sequence[str | None]) -> dict[str, int]:
    # Several ids may share a spelling; text encodes to the first, so it wins.
    ids = dict(zip(reversed(tokens), range(len(tokens) - 1, -1, -1)))
    ids.pop(None, None)  # type: ignore[call-overload]
    return ids


def _native_spm(vocab: GGUFVocab, types: np.ndarray) -> _C.SpmTokenizer:
    assert vocab.scores is not None
    return _C.SpmTokenizer(
        vocab.tokens,
        np.asarray(vocab.scores, dtype=np.float32),
        types,
        bos_id=-1 if vocab.bos_token_id is None else vocab.bos_token_id,
        eos_id=-1 if vocab.eos_token_id is None else vocab.eos_token_id,
        unk_id=-1 if vocab.unk_token_id is None else vocab.unk_token_id,
        add_bos=vocab.add_bos,
        add_eos=vocab.add_eos,
        add_space_prefix=vocab.add_space_prefix,
    )


def _gguf_pieces(vocab: GGUFVocab, special: Sequence[int]) -> TokenPieces:
    """Decode pieces in Python (gpt2 vocabularies; for llama ones the cross-check of the native
    `SpmTokenizer.pieces`)."""
    types = vocab.token_types
    if vocab.model == "llama":
        pieces = [
            sentencepiece_piece(t, k == BYTE and _BYTE_TOKEN.fullmatch(t) is not None)
            if k in (NORMAL, BYTE)
            else t.encode("utf-8")
            for t, k in zip(vocab.tokens, types)
        ]
        return TokenPieces.build(pieces, special, strip_leading_space=vocab.add_space_prefix)
    normal = byte_level_decoder(gpt2_byte_alphabet())
    pieces = [normal(t) if k == NORMAL else t.encode("utf-8") for t, k in zip(vocab.tokens, types)]
    return TokenPieces.build(pieces, special, strip_leading_space=False)


def _decoder_steps(decoder: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not decoder:
        return []
    if decoder.get("type") == "Sequence":
        return [s for d in decoder.get("decoders", []) for s in _decoder_steps(d)]
    return [decoder]


def _hf_pieces(
    decoder: Mapping[str, Any] | None,
    tokens: list[str | None],
    added: Mapping[int, tokenizers.AddedToken],
    special: Sequence[int],
) -> TokenPieces | None:
    """Byte pieces for the two decoder shapes LLM tokenizer.json files use; None for others."""
    steps = _decoder_steps(decoder)
    kinds = {s.get("type") for s in steps}
    if kinds == {"ByteLevel"}:
        piece = byte_level_decoder(gpt2_byte_alphabet())
        pieces = [b"" if t is None else piece(t) for t in tokens]
        return TokenPieces.build(pieces, special, strip_leading_space=False)
    spm_steps = {"Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"}
    if kinds and kinds <= spm_steps and ("ByteFallback" in kinds or "Metaspace" in kinds):
        replaces = [s for s in steps if s.get("type") == "Replace"]
        if any(s.get("pattern", {}).get("String") != "\u2581" or s.get("content") != " " for s in replaces):
            return None
        strip = any(s.get("type") == "Strip" and s.get("content") == " " and s.get("start", 0) >= 1 for s in steps)
        strip |= any(
            s.get("type") == "Metaspace"
            and s.get("prepend_scheme", "always" if s.get("add_prefix_space") else "never") != "never"
            for s in steps
        )
        byte_fallback = "ByteFallback" in kinds
        pieces = [
            b""
            if t is None
            else sentencepiece_piece(t, byte_fallback and i not in added and _BYTE_TOKEN.fullmatch(t) is not None)
            for i, t in enumerate(tokens)
        ]
        return TokenPieces.build(pieces, special, strip_leading_space=strip)
    return None


def _set_post_processor(hf: tokenizers.Tokenizer, tokens: list[str | None], bos: int | None, eos: int | None) -> None:
    head = [tokens[bos]] if bos is not None else []
    tail = [tokens[eos]] if eos is not None else []
    specials = {
        t: i
        for t, i in ((tokens[bos] if bos is not None else None, bos), (tokens[eos] if eos is not None else None, eos))
        if t
    }
    hf.post_processor = processors.TemplateProcessing(
        single=[*head, "$A", *tail],
        pair=[*head, "$A", *tail, *head, "$B:1", *tail],
        special_tokens=list(specials.items()),
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _hf_chat_template(path: Path, config: Mapping[str, Any]) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    template = config.get("chat_template") or _read_json(path / "chat_template.json").get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None
