"""A HuggingFace `tokenizers.Tokenizer` from a GGUF file's tokenizer metadata.

A GGUF file has no tokenizer.json: it stores the vocabulary under llama.cpp's `tokenizer.ggml.*`
keys. Two vocabulary kinds cover the models we run:

* `llama`: SentencePiece BPE. No merges are stored; SentencePiece merges the adjacent pair whose
  concatenation is the best-scoring piece, leftmost first. A BPE whose merge ranks follow the score
  of the merged piece gives the same segmentation. Spaces are `▁`, characters outside the
  vocabulary fall back to `<0xNN>` byte tokens, and there is no pre-tokenization: the whole text
  between two atomically matched tokens is one BPE word.
* `gpt2`: byte-level BPE with stored merges, after a regex split chosen by `tokenizer.ggml.pre`.

Control tokens become special added tokens (matched whole in text when special parsing is on);
user-defined tokens become plain added tokens, always matched whole, as llama.cpp does.

`Tokenizer` encodes `llama` vocabularies with the native `SpmTokenizer` (csrc/core/spm_tokenizer.h),
which reproduces this pipeline id for id without deriving the merges (seconds for 262k tokens);
the `tokenizers` version stays for HF export and as the reference it is tested against.

This module depends on nothing else in tinyfast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

# llama.cpp's token types (tokenizer.ggml.token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPM_SPACE = "\u2581"  # SentencePiece's visible space, "▁"

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")

# Pre-tokenizer regexes, as the models' own tokenizer.json files (and llama.cpp) spell them.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizerSpec:
    split: str
    ignore_merges: bool = False  # a word that is itself a token is emitted whole (Llama 3)
    nfc: bool = False  # Qwen2's tokenizer.json normalizes to NFC
    add_bos: bool = False  # default when the file has no tokenizer.ggml.add_bos_token


_LLAMA3 = PreTokenizerSpec(_LLAMA3_SPLIT, ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizerSpec(_QWEN2_SPLIT, nfc=True)
# "default" is what llama.cpp's converter writes when it did not recognize the pre-tokenizer;
# the GPT-2 split is the honest guess for it.
_GPT2 = PreTokenizerSpec(_GPT2_SPLIT)

PRE_TOKENIZERS: dict[str, PreTokenizerSpec] = {
    "default": _GPT2,
    "gpt2": _GPT2,
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "qwen2": _QWEN2,
    "deepseek-r1-qwen": _QWEN2,
}

MODELS = ("llama", "gpt2")


def gpt2_byte_alphabet() -> list[str]:
    """The printable character GPT-2's byte-level BPE uses for each byte value."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars: list[str] = []
    shifted = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


@dataclass(frozen=True)
class GGUFVocab:
    """The `tokenizer.ggml.*` metadata, checked and in plain Python types."""

    model: str
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    bos_token_id: int | None
    eos_token_id: int | None
    unk_token_id: int | None
    pad_token_id: int | None
    eot_token_ids: tuple[int, ...]  # tokenizer.ggml.eot_token_id / eom_token_id, when present
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None
    architecture: str | None

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)


def _as_list(value: Any) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _optional_id(meta: Mapping[str, Any], key: str, n: int) -> int | None:
    value = meta.get(key)
    if value is None:
        return None
    value = int(value)
    if not 0 <= value < n:
        raise ValueError(f"{key} = {value} is outside the vocabulary (size {n})")
    return value


def parse_gguf_vocab(meta: Mapping[str, Any]) -> GGUFVocab:
    """Check the tokenizer metadata of a GGUF file and convert it to plain Python values.

    `meta` maps GGUF keys (`tokenizer.ggml.tokens`, ...) to values; arrays may be lists or NumPy
    arrays. Raises ValueError on anything missing, inconsistent or unsupported.
    """
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        raise ValueError("GGUF metadata has no tokenizer.ggml.model")
    model = str(model)
    if model not in MODELS:
        raise ValueError(f"unsupported tokenizer.ggml.model {model!r}; supported: {', '.join(MODELS)}")

    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens) == 0:
        raise ValueError("GGUF metadata has no tokenizer.ggml.tokens")
    tokens = list(map(str, _as_list(tokens)))
    n = len(tokens)

    special_ids = {
        name: _optional_id(meta, f"tokenizer.ggml.{name}_token_id", n) for name in ("bos", "eos", "unknown", "padding")
    }
    types_raw = meta.get("tokenizer.ggml.token_type")
    if types_raw is None:
        # Older files: <0xNN> tokens of a SentencePiece vocabulary are bytes, the declared
        # special tokens are control tokens, the rest is normal.
        types = [BYTE if model == "llama" and _BYTE_TOKEN.fullmatch(t) else NORMAL for t in tokens]
        for name, i in special_ids.items():
            if i is not None:
                types[i] = UNKNOWN if name == "unknown" else CONTROL
    else:
        types = np.asarray(types_raw, dtype=np.int64).tolist()
        if len(types) != n:
            raise ValueError(f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")

    scores = meta.get("tokenizer.ggml.scores")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).tolist()
        if len(scores) != n:
            raise ValueError(f"tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")

    merges = meta.get("tokenizer.ggml.merges")
    if merges is not None:
        merges = [str(m) for m in _as_list(merges)]

    pre = meta.get("tokenizer.ggml.pre")
    pre = None if pre is None else str(pre)
    if model == "llama":
        if scores is None:
            raise ValueError("a 'llama' (SentencePiece) vocabulary needs tokenizer.ggml.scores")
        default_bos, default_space_prefix = True, True
    else:
        if merges is None:
            raise ValueError("a 'gpt2' (byte-level BPE) vocabulary needs tokenizer.ggml.merges")
        if pre is None:
            pre = "default"
        if pre not in PRE_TOKENIZERS:
            raise ValueError(
                f"unsupported tokenizer.ggml.pre {pre!r} for a gpt2 vocabulary; "
                f"supported: {', '.join(sorted(PRE_TOKENIZERS))}"
            )
        default_bos, default_space_prefix = PRE_TOKENIZERS[pre].add_bos, False

    eot = tuple(
        i
        for i in (
            _optional_id(meta, "tokenizer.ggml.eot_token_id", n),
            _optional_id(meta, "tokenizer.ggml.eom_token_id", n),
        )
        if i is not None
    )
    template = meta.get("tokenizer.chat_template")
    arch = meta.get("general.architecture")
    vocab = GGUFVocab(
        model=model,
        pre=pre,
        tokens=tokens,
        token_types=types,
        scores=scores,
        merges=merges,
        bos_token_id=special_ids["bos"],
        eos_token_id=special_ids["eos"],
        unk_token_id=special_ids["unknown"],
        pad_token_id=special_ids["padding"],
        eot_token_ids=eot,
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", default_bos)),
        add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", default_space_prefix)),
        chat_template=None if template is None else str(template),
        architecture=None if arch is None else str(arch),
    )
    if vocab.add_bos and vocab.bos_token_id is None:
        raise ValueError("tokenizer.ggml.add_bos_token is set but there is no tokenizer.ggml.bos_token_id")
    if vocab.add_eos and vocab.eos_token_id is None:
        raise ValueError("tokenizer.ggml.add_eos_token is set but there is no tokenizer.ggml.eos_token_id")
    return vocab


def build_hf_tokenizer(meta: Mapping[str, Any] | GGUFVocab) -> Tokenizer:
    """A `tokenizers.Tokenizer` equivalent to the vocabulary the GGUF metadata describes."""
    vocab = meta if isinstance(meta, GGUFVocab) else parse_gguf_vocab(meta)
    if vocab.model == "llama":
        tok = _sentencepiece_bpe(vocab)
    else:
        tok = _byte_level_bpe(vocab)
    _add_atomic_tokens(tok, vocab)
    post = _post_processor(vocab)
    if post is not None:
        tok.post_processor = post
    return tok


def _token_ids(tokens: Sequence[str]) -> dict[str, int]:
    # A few vocabularies spell two ids the same; the first one is the one text encodes to.
    ids: dict[str, int] = {}
    for i, t in enumerate(tokens):
        ids.setdefault(t, i)
    return ids


def sentencepiece_merges(vocab: GGUFVocab, ids: Mapping[str, int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-driven merging.

    Every split of a normal token into two tokens is a merge, ranked by the merged token's score
    (best first; ties by token id). Different splits of one token never compete in practice: they
    yield the same piece, so their relative order does not change the result.
    """
    assert vocab.scores is not None
    tokens, types, scores = vocab.tokens, vocab.token_types, vocab.scores
    ranked: list[tuple[float, int, int, int]] = []
    append = ranked.append
    get = ids.get
    for i, t in enumerate(tokens):
        if types[i] != NORMAL or len(t) < 2:
            continue
        for k in range(1, len(t)):
            left = get(t[:k])
            if left is None:
                continue
            right = get(t[k:])
            if right is not None:
                append((-scores[i], i, left, right))
    ranked.sort()
    return [(tokens[left], tokens[right]) for _, _, left, right in ranked]


def _sentencepiece_bpe(vocab: GGUFVocab) -> Tokenizer:
    ids = _token_ids(vocab.tokens)
    merges = sentencepiece_merges(vocab, ids)
    has_bytes = any(t == BYTE for t in vocab.token_types)
    unk = vocab.tokens[vocab.unk_token_id] if vocab.unk_token_id is not None else None
    tok = Tokenizer(models.BPE(vocab=ids, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=has_bytes))
    # Normalizers run on each stretch of text between atomically matched tokens, so the prefix
    # space is added after every control/user-defined token, as llama.cpp does.
    steps = [normalizers.Replace(" ", SPM_SPACE)]
    if vocab.add_space_prefix:
        steps.insert(0, normalizers.Prepend(SPM_SPACE))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = None
    dec = [decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    return tok


def _split_merge(merge: str) -> tuple[str, str]:
    # llama.cpp searches the separator from the second character on, so a merge may start with " ".
    pos = merge.find(" ", 1)
    if pos < 0:
        raise ValueError(f"malformed merge {merge!r} in tokenizer.ggml.merges")
    return merge[:pos], merge[pos + 1 :]


def _byte_level_bpe(vocab: GGUFVocab) -> Tokenizer:
    assert vocab.merges is not None and vocab.pre is not None
    spec = PRE_TOKENIZERS[vocab.pre]
    ids = _token_ids(vocab.tokens)
    merges = [_split_merge(m) for m in vocab.merges]
    for left, right in merges:
        if left not in ids or right not in ids or left + right not in ids:
            raise ValueError(f"merge {left!r} + {right!r} uses a token missing from the vocabulary")
    tok = Tokenizer(models.BPE(vocab=ids, merges=merges, ignore_merges=spec.ignore_merges))
    if spec.nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec.split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _add_atomic_tokens(tok: Tokenizer, vocab: GGUFVocab) -> None:
    special, plain = [], []
    for t, kind in zip(vocab.tokens, vocab.token_types):
        if not t:
            continue
        if kind in (CONTROL, UNKNOWN):
            special.append(AddedToken(t, special=True, normalized=False))
        elif kind == USER_DEFINED:
            plain.append(AddedToken(t, special=False, normalized=False))
    # Ids come from the model vocabulary, which already holds every token.
    if special:
        tok.add_special_tokens(special)
    if plain:
        tok.add_tokens(plain)


def _post_processor(vocab: GGUFVocab) -> processors.TemplateProcessing | None:
    if not (vocab.add_bos or vocab.add_eos):
        return None
    head, tail, specials = [], [], []
    if vocab.add_bos:
        assert vocab.bos_token_id is not None
        bos = vocab.tokens[vocab.bos_token_id]
        head.append(bos)
        specials.append((bos, vocab.bos_token_id))
    if vocab.add_eos:
        assert vocab.eos_token_id is not None
        eos = vocab.tokens[vocab.eos_token_id]
        tail.append(eos)
        if eos not in dict(specials):
            specials.append((eos, vocab.eos_token_id))
    return processors.TemplateProcessing(
        single=[*head, "$A", *tail],
        pair=[*head, "$A", *tail, *head, "$B:1", *tail],
        special_tokens=specials,
    )
