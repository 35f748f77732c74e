"""The native SentencePiece-BPE encoder (`tinyfast._C.SpmTokenizer`) against the `tokenizers`
pipeline `build_hf_tokenizer` assembles for the same GGUF vocabulary (the one checked against
transformers, llama.cpp and SentencePiece in the other tokenizer tests): the real Gemma 3
vocabulary, and small random vocabularies that reach the corners (score ties, duplicate spellings,
missing byte tokens, no unknown token, atomic tokens inside other atomic tokens)."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinyfast.tokenizer import Tokenizer, build_hf_tokenizer, parse_gguf_vocab
from tinyfast.tokenizer.gguf_tokenizer import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED
from tinyfast.tokenizer.tokenizer import _gguf_pieces
from tokenizer_corpus import CODE_PY, CORPUS, PARAGRAPH

_hf_lock = threading.Lock()


def hf_encode(hf, text: str, add_special_tokens: bool, parse_special: bool) -> list[int]:
    """How the tokenizers-based Tokenizer encoded (before the native encoder)."""
    with _hf_lock:
        hf.encode_special_tokens = not parse_special
        try:
            return hf.encode(text, add_special_tokens=add_special_tokens).ids
        finally:
            hf.encode_special_tokens = False


FLAGS = [(a, p) for a in (True, False) for p in (True, False)]


def assert_same(tok: Tokenizer, hf, text: str) -> None:
    for add_special_tokens, parse_special in FLAGS:
        expected = hf_encode(hf, text, add_special_tokens, parse_special)
        got = tok.encode(text, add_special_tokens=add_special_tokens, parse_special=parse_special)
        assert got == expected, (text, add_special_tokens, parse_special)


# --- the real Gemma 3 vocabulary ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_hf(gemma_meta):
    return build_hf_tokenizer(parse_gguf_vocab(gemma_meta))  # ~5-8 s, once


@pytest.fixture(scope="module")
def gemma_atomic(gemma_meta) -> list[str]:
    types = np.asarray(gemma_meta["tokenizer.ggml.token_type"])
    tokens = gemma_meta["tokenizer.ggml.tokens"]
    return [tokens[i] for i in np.flatnonzero(np.isin(types, (CONTROL, UNKNOWN, USER_DEFINED)))]


def test_gemma_corpus(gemma_tok, gemma_hf):
    extra = [
        "",
        " ",
        "  x",
        "\u2fd5",
        "<start_of_turn><end_of_turn>",
        "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
        "a<bos>b<eos>c<pad><unk><mask>",
        (PARAGRAPH + "\n" + CODE_PY) * 5,
    ]
    for text in CORPUS + extra:
        assert_same(gemma_tok, gemma_hf, text)


def test_gemma_encode_batch(gemma_tok, gemma_hf):
    texts = CORPUS[:20] + [""]
    for add in (True, False):
        assert gemma_tok.encode_batch(texts, add_special_tokens=add) == [hf_encode(gemma_hf, t, add, True) for t in texts]


# emoji (incl. ZWJ sequences and skin tones), CJK, combining marks, scripts, controls, private use
# and unassigned characters (byte fallback), SentencePiece's own "▁"
_INTERESTING = (
    "😀👍🏽👨‍👩‍👧🇫🇷✨" "漢字かなカナ한국어" "e\u0301a\u0308\u0327\u20dd" "αβγ жщ עִבְרִית العربية हिन्दी"
    "\u2fd5\ue000\U000f0000\U0010fffd\u0378\x00\x01\x7f\u200b\ufeff\u2581" "<>/|_-.,;:!?'\"`~@#$%^&*()[]{}0123456789"
)
_WHITESPACE = st.text(st.sampled_from(" \n\t\r\u3000\xa0"), min_size=1, max_size=40)


def _gemma_text():
    return st.lists(
        st.one_of(
            st.text(max_size=12),
            st.text(st.sampled_from(_INTERESTING), max_size=12),
            st.text(st.sampled_from("abcdefghij ABC"), max_size=12),
            _WHITESPACE,
            st.sampled_from(["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<table>", "<b>", "</b>"]),
            st.integers(0, 6413),  # an index into the atomic tokens
        ),
        max_size=8,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=_gemma_text())
def test_gemma_random_text(gemma_tok, gemma_hf, gemma_atomic, parts):
    text = "".join(gemma_atomic[p % len(gemma_atomic)] if isinstance(p, int) else p for p in parts)
    assert_same(gemma_tok, gemma_hf, text)


def test_gemma_pieces_match_python(gemma_meta, gemma_tok):
    vocab = parse_gguf_vocab(gemma_meta)
    special = [i for i, k in enumerate(vocab.token_types) if k in (CONTROL, UNKNOWN, UNUSED)]
    expected = _gguf_pieces(vocab, special)
    assert gemma_tok._pieces.with_special == expected.with_special
    assert gemma_tok._pieces.without_special == expected.without_special


def test_gemma_never_builds_hf(gemma_meta):
    tok = Tokenizer.from_gguf_metadata(gemma_meta)
    ids = tok.encode("<start_of_turn>user\nHello 😀<end_of_turn>")
    tok.encode_batch(["a", "b"])
    tok.decode(ids)
    det = tok.detokenizer()
    "".join([det.add(i) for i in ids] + [det.finish()])
    tok.token_bytes(ids[-1])
    tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    assert tok.token_to_id("<end_of_turn>") == 106 and tok.token_to_id("no such token") is None
    assert tok._hf is None


def test_bad_input(gemma_tok):
    for bad in (b"hi", None, 3, ["hi"]):
        with pytest.raises(TypeError):
            gemma_tok.encode(bad)
    with pytest.raises(TypeError):
        gemma_tok.encode_batch(["ok", b"bytes"])
    with pytest.raises(UnicodeEncodeError):
        gemma_tok.encode("lone \ud800 surrogate")


def test_encode_is_thread_safe(gemma_tok):
    texts = [(PARAGRAPH + f" {k} <start_of_turn>") * 30 for k in range(8)]
    expected = [gemma_tok.encode(t, parse_special=bool(k % 2)) for k, t in enumerate(texts)]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda kt: gemma_tok.encode(kt[1], parse_special=bool(kt[0] % 2)), enumerate(texts)))
            assert got == expected


# --- small random vocabularies ------------------------------------------------------------------

_CHARS = "abcd\u2581é漢"
_UNKNOWN_CHARS = "xyz😀\u2fd5"  # never single-character tokens


def _random_vocab(seed: int, *, bytes_: str, unk: bool, space_prefix: bool, add_eos: bool) -> dict:
    """A 'llama' GGUF metadata dict. bytes_: 'all', 'some' (a few <0xNN> tokens) or 'none'."""
    rng = random.Random(seed)
    tokens, types, scores = [], [], []

    def add(t: str, kind: int, score: float | None = None) -> None:
        tokens.append(t)
        types.append(kind)
        scores.append(rng.choice([-1.0, -2.0, -2.0, -3.0, -0.5]) if score is None else score)  # many ties

    add("<unk>", UNKNOWN if unk else CONTROL, 0.0)
    add("<s>", CONTROL, 0.0)
    add("</s>", CONTROL, 0.0)
    if bytes_ == "all":
        for b in range(256):
            add(f"<0x{b:02X}>", BYTE, 0.0)
    elif bytes_ == "some":  # é (C3 A9) complete, 😀 (F0 9F 98 80) partial, so it falls back to unk
        for b in (0xC3, 0xA9, 0xF0, 0x9F, 0x0A):
            add(f"<0x{b:02X}>", BYTE, 0.0)
    for c in _CHARS:
        add(c, NORMAL)
    for _ in range(rng.randint(10, 60)):
        add("".join(rng.choice(_CHARS) for _ in range(rng.randint(2, 5))), rng.choice([NORMAL] * 8 + [UNUSED]))
    # atomic tokens, some inside others: a user-defined token inside a control token is only
    # found when special parsing is on (the control token's match consumes it otherwise)
    add("<u>", USER_DEFINED)
    add("<u>a", USER_DEFINED)
    add("s>", USER_DEFINED)
    add("<ctl>", CONTROL)
    add("\n\n", USER_DEFINED)
    add("ab", rng.choice([USER_DEFINED, NORMAL]))
    # normal tokens spelled like byte-token pairs: byte-fallback symbols merge by their spelling,
    # as the derived merge list makes tokenizers do
    add("<0x0A>a", NORMAL, 5.0)
    add("b<0x0A>", NORMAL, 5.0)
    # duplicate spellings: text encodes to the first id
    for _ in range(3):
        add(rng.choice(tokens[3:]), rng.choice([NORMAL, NORMAL, USER_DEFINED, UNUSED]))
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": seed % 2 == 0,
        "tokenizer.ggml.add_eos_token": add_eos,
        "tokenizer.ggml.add_space_prefix": space_prefix,
    }
    if unk:
        meta["tokenizer.ggml.unknown_token_id"] = 0
    return meta


_CONFIGS = [
    dict(bytes_="all", unk=True, space_prefix=True, add_eos=False),
    dict(bytes_="all", unk=True, space_prefix=False, add_eos=True),
    dict(bytes_="some", unk=True, space_prefix=True, add_eos=False),
    dict(bytes_="none", unk=True, space_prefix=True, add_eos=True),
    dict(bytes_="none", unk=False, space_prefix=False, add_eos=False),
    dict(bytes_="some", unk=False, space_prefix=True, add_eos=False),
]
_PAIRS = [(seed, i) for i in range(len(_CONFIGS)) for seed in range(4)]


@pytest.fixture(scope="module", params=_PAIRS, ids=[f"seed{s}-cfg{i}" for s, i in _PAIRS])
def small_pair(request):
    seed, i = request.param
    meta = _random_vocab(seed, **_CONFIGS[i])
    return Tokenizer.from_gguf_metadata(meta), build_hf_tokenizer(meta)


_SMALL_TEXT = st.lists(
    st.one_of(
        st.text(st.sampled_from(_CHARS + _UNKNOWN_CHARS + " \n"), max_size=15),
        st.sampled_from(["<u>", "<u>a", "<s>", "</s>", "<unk>", "<ctl>", "s>", "\n\n", "  ", "<0x41>"]),
    ),
    max_size=6,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=_SMALL_TEXT)
def test_small_vocab_random_text(small_pair, text):
    tok, hf = small_pair
    assert_same(tok, hf, text)


def test_small_vocab_fixed_cases(small_pair):
    tok, hf = small_pair
    for text in ["", " ", "a", "ab", "abab abcd", "xyz", "ax😀é", "😀é😀", "<s>", "<s>a</s>", "<u>a<u>", "d\n\n\nb", "x\na", "😀\n", "yx\nz", "b\na"]:
        assert_same(tok, hf, text)


def test_hf_is_built_on_first_access():
    meta = _random_vocab(1, bytes_="all", unk=True, space_prefix=True, add_eos=False)
    tok = Tokenizer.from_gguf_metadata(meta)
    assert tok._hf is None
    assert tok.hf.encode("abc", add_special_tokens=False).ids == tok.encode("abc", add_special_tokens=False)
    assert tok.hf is tok.hf


def test_bytes_of_a_character_come_before_a_pending_unknown():
    """tokenizers' quirk, kept: "x" has no byte tokens (unknown, pending), "\n" falls back to
    <0x0A>, which is emitted before the pending unknown."""
    meta = _random_vocab(0, bytes_="some", unk=True, space_prefix=False, add_eos=False)
    tok = Tokenizer.from_gguf_metadata(meta)
    assert [tok.id_to_token(i) for i in tok.encode("x\n", add_special_tokens=False)] == ["<0x0A>", "<unk>"]


def test_unknown_characters_without_bytes_fuse_into_one_unk():
    meta = _random_vocab(0, bytes_="none", unk=True, space_prefix=False, add_eos=False)
    tok = Tokenizer.from_gguf_metadata(meta)
    assert tok.encode("xyz", add_special_tokens=False) == [0]
    assert tok.encode("xaz", add_special_tokens=False)[::2] == [0, 0]
    meta = _random_vocab(0, bytes_="none", unk=False, space_prefix=False, add_eos=False)
    assert Tokenizer.from_gguf_metadata(meta).encode("xyz", add_special_tokens=False) == []  # dropped
