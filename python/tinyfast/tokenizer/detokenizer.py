"""Token ids to text, all at once or streamed.

Every token decodes to a fixed byte string (its *piece*): SentencePiece pieces with `▁` turned into
a space and `<0xNN>` into the byte 0xNN; byte-level BPE pieces mapped back through GPT-2's byte
alphabet; control tokens to their text, or to nothing when special tokens are skipped. The text of
a sequence is the UTF-8 decoding of its pieces joined (invalid bytes become U+FFFD, as Python's
"replace" handler does), less one leading space for vocabularies that add a space prefix.

Because of that, streaming is exact by construction: an incremental UTF-8 decoder holds back an
incomplete character (say the first two of four bytes of an emoji sent as byte tokens) until it is
complete, each step costs only the new tokens, and the pieces a stream emits concatenate to
`decode(all_ids)`.

On valid text this equals the decode of `tokenizers` and llama.cpp. On invalid byte sequences
(random ids) it follows Python/Unicode "maximal subpart" replacement; `tokenizers`' ByteFallback
decoder instead writes one U+FFFD per byte token of a bad run, which a stream could only match by
holding back every run of byte tokens.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

SPM_SPACE = "\u2581"


def _as_ids(ids: int | Iterable[int]) -> list[int]:
    if isinstance(ids, int):
        return [ids]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids] if not isinstance(ids, list) else ids


@dataclass(frozen=True)
class TokenPieces:
    """The bytes each token id decodes to, with and without special tokens."""

    with_special: list[bytes]
    without_special: list[bytes]  # special tokens map to b""
    strip_leading_space: bool  # the encoder prepended "▁"; decoding removes one leading space

    @property
    def size(self) -> int:
        return len(self.with_special)

    def table(self, skip_special_tokens: bool) -> list[bytes]:
        return self.without_special if skip_special_tokens else self.with_special

    def join(self, ids: Sequence[int], skip_special_tokens: bool) -> bytes:
        table = self.table(skip_special_tokens)
        if ids and (min(ids) < 0 or max(ids) >= len(table)):
            bad = next(i for i in ids if not 0 <= i < len(table))
            raise ValueError(f"token id {bad} is outside the vocabulary (size {len(table)})")
        return b"".join([table[i] for i in ids])

    def decode(self, ids: int | Iterable[int], skip_special_tokens: bool = True) -> str:
        text = self.join(_as_ids(ids), skip_special_tokens).decode("utf-8", "replace")
        if self.strip_leading_space and text.startswith(" "):
            text = text[1:]
        return text

    @classmethod
    def build(cls, pieces: list[bytes], special: Iterable[int], strip_leading_space: bool) -> TokenPieces:
        without = list(pieces)
        for i in special:
            without[i] = b""
        return cls(pieces, without, strip_leading_space)


def sentencepiece_piece(token: str, is_byte: bool) -> bytes:
    if is_byte:
        return bytes([int(token[3:5], 16)])
    return token.replace(SPM_SPACE, " ").encode("utf-8")


def byte_level_decoder(alphabet: Sequence[str]) -> Callable[[str], bytes]:
    """Maps a byte-level BPE token back to bytes. A token with a character outside the alphabet
    (an added token such as "<｜end▁of▁sentence｜>") is its own UTF-8, as in `tokenizers`."""
    char_to_byte = {c: b for b, c in enumerate(alphabet)}

    def piece(token: str) -> bytes:
        try:
            return bytes([char_to_byte[c] for c in token])
        except KeyError:
            return token.encode("utf-8")

    return piece


class IncrementalDetokenizer:
    """Streams text from token ids as they are generated.

    `add(ids)` returns the text that is final once those ids are known; `finish()` returns what is
    held back at the end (an incomplete UTF-8 sequence becomes U+FFFD, as in `decode`). Joining
    every returned string gives exactly `pieces.decode(all_ids, skip_special_tokens)`.

    `continuation=True` is for output that continues a prompt: the leading space of the first
    token is then real text, not the encoder's prefix space, and is kept.
    """

    def __init__(self, pieces: TokenPieces, *, skip_special_tokens: bool = True, continuation: bool = False):
        self._table = pieces.table(skip_special_tokens)
        self._pieces = pieces
        self._skip = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._strip = pieces.strip_leading_space and not continuation
        self.num_tokens = 0

    def add(self, ids: int | Iterable[int]) -> str:
        ids = _as_ids(ids)
        if not ids:
            return ""
        data = self._pieces.join(ids, self._skip)
        self.num_tokens += len(ids)
        return self._emit(self._utf8.decode(data))

    def finish(self) -> str:
        return self._emit(self._utf8.decode(b"", final=True))

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete character held back."""
        return len(self._utf8.getstate()[0])

    def _emit(self, text: str) -> str:
        if self._strip and text:
            self._strip = False
            if text[0] == " ":
                return text[1:]
        return text


class WindowDetokenizer:
    """Streaming for tokenizers whose decoder we do not model as byte pieces (rare: neither
    byte-level nor SentencePiece). It decodes a short window of recent tokens with the
    tokenizer's own decoder and emits the new suffix once it no longer ends in U+FFFD; joined
    output matches a full decode whenever that decoder is local (true of all common ones)."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # tokens whose text is already emitted
        self.num_tokens = 0

    def add(self, ids: int | Iterable[int]) -> str:
        self._ids.extend(_as_ids(ids))
        self.num_tokens = len(self._ids)
        return self._step(final=False)

    def finish(self) -> str:
        return self._step(final=True)

    def _step(self, final: bool) -> str:
        old = self._decode(self._ids[self._prefix : self._read])
        new = self._decode(self._ids[self._prefix :])
        if len(new) > len(old) and (final or not new.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return new[len(old) :]
        return ""
