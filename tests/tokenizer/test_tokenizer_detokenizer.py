"""Streaming detokenization: the pieces concatenate to the full decode, no piece is broken UTF-8,
and no text is emitted that a later token could change."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinyfast.tokenizer import IncrementalDetokenizer, Tokenizer, TokenPieces
from tinyfast.tokenizer.detokenizer import WindowDetokenizer
from tokenizer_corpus import CORPUS
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers


def stream(tok: Tokenizer, ids: list[int], chunks: list[int], skip: bool, continuation: bool = False) -> list[str]:
    """Feed `ids` in chunks of the given sizes (cycled); return every emitted piece."""
    det = tok.detokenizer(skip_special_tokens=skip, continuation=continuation)
    full = tok.decode(ids, skip_special_tokens=skip)
    out, pos, k = [], 0, 0
    while pos < len(ids):
        size = chunks[k % len(chunks)] if chunks else 1
        k += 1
        out.append(det.add(ids[pos : pos + size]))
        pos += size
        # never emit what a later token could still change: the text so far is final
        assert full.startswith("".join(out))
        if isinstance(det, IncrementalDetokenizer):
            assert det.pending_bytes <= 3  # constant state: only an incomplete character is held
    out.append(det.finish())
    for piece in out:
        piece.encode("utf-8")  # strict: raises on lone surrogates
    return out


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _ids(tok: Tokenizer):
    """Random ids, biased toward what makes streaming hard: byte tokens and special tokens."""
    n = tok.vocab_size
    byte_ids = [i for i in range(min(n, 1024)) if (tok.id_to_token(i) or "").startswith("<0x")]
    special = sorted(tok.special_ids)[:200] or [0]
    multibyte = [
        i for i in range(n - 2000, n) if len(tok.token_bytes(i)) > len(tok.token_bytes(i).decode("utf-8", "replace"))
    ]
    choices = [st.integers(0, n - 1), st.sampled_from(special)]
    if byte_ids:
        choices.append(st.sampled_from(byte_ids))
    if multibyte:
        choices.append(st.sampled_from(multibyte))
    return st.lists(st.one_of(*choices), max_size=60)


@pytest.mark.parametrize("skip", [True, False])
def test_random_ids_stream_gemma(gemma_tok, skip):
    @SETTINGS
    @given(ids=_ids(gemma_tok), chunks=st.lists(st.integers(1, 5), max_size=4))
    def check(ids, chunks):
        assert "".join(stream(gemma_tok, ids, chunks, skip)) == gemma_tok.decode(ids, skip_special_tokens=skip)

    check()


@pytest.mark.parametrize("skip", [True, False])
def test_random_ids_stream_qwen(qwen_tok, skip):
    # Byte-level tokens can hold part of a character (e.g. "\xe6\x97"), so random ids exercise
    # the incomplete-UTF-8 hold-back without byte tokens.
    @SETTINGS
    @given(ids=_ids(qwen_tok), chunks=st.lists(st.integers(1, 5), max_size=4))
    def check(ids, chunks):
        assert "".join(stream(qwen_tok, ids, chunks, skip)) == qwen_tok.decode(ids, skip_special_tokens=skip)

    check()


_TEXT = st.one_of(
    st.text(max_size=60), st.sampled_from(CORPUS), st.text(st.sampled_from("日本😀é \n\t<>ab"), max_size=30)
)


def test_random_text_stream(real_tok):
    @SETTINGS
    @given(text=_TEXT)
    def check(text):
        ids = real_tok.encode(text)
        pieces = stream(real_tok, ids, [1], skip=True)
        assert "".join(pieces) == real_tok.decode(ids)

    check()


def test_corpus_one_token_at_a_time(real_tok):
    for text in CORPUS:
        ids = real_tok.encode(text, add_special_tokens=False)
        for skip in (True, False):
            assert "".join(stream(real_tok, ids, [1], skip)) == real_tok.decode(ids, skip_special_tokens=skip)


def test_incomplete_character_is_held_back(gemma_tok):
    ids = gemma_tok.encode("x\u2fd5y", add_special_tokens=False)  # x, <0xE2>, <0xBF>, <0x95>, y
    det = gemma_tok.detokenizer()
    assert [det.add(i) for i in ids] == ["x", "", "", "\u2fd5", "y"]
    assert det.finish() == ""
    # a stream cut inside a character ends in U+FFFD, exactly like decode
    det = gemma_tok.detokenizer()
    assert det.add(ids[:3]) == "x" and det.pending_bytes == 2
    assert det.finish() == "\ufffd" == gemma_tok.decode(ids[1:3])


def test_qwen_character_split_across_tokens(qwen_tok):
    ids = qwen_tok.encode("\U0001d518", add_special_tokens=False)
    assert [qwen_tok.token_bytes(i) for i in ids] == [b"\xf0\x9d\x94", b"\x98"]
    det = qwen_tok.detokenizer()
    assert [det.add(i) for i in ids] == ["", "\U0001d518"]


def _spm_pieces() -> TokenPieces:
    # ids: 0 "<s>" (control), 1 "▁Hello", 2 "▁world", 3 "!"
    return TokenPieces.build([b"<s>", b" Hello", b" world", b"!"], special=[0], strip_leading_space=True)


def test_leading_space_rules():
    pieces = _spm_pieces()
    assert pieces.decode([0, 1, 2, 3]) == "Hello world!"
    det = IncrementalDetokenizer(pieces)
    assert [det.add(i) for i in [0, 1, 2, 3]] == ["", "Hello", " world", "!"]
    # with special tokens shown, the first text is "<s>": no space to strip, and the rest keeps its own
    assert pieces.decode([0, 1], skip_special_tokens=False) == "<s> Hello"
    det = IncrementalDetokenizer(pieces, skip_special_tokens=False)
    assert det.add([0, 1]) == "<s> Hello"
    # output that continues a prompt keeps its first space
    det = IncrementalDetokenizer(pieces, continuation=True)
    assert det.add([2, 3]) == " world!"


def test_window_detokenizer_for_other_decoders(tmp_path):
    vocab = {"[UNK]": 0, "hello": 1, "##ing": 2, "world": 3, "!": 4}
    hf = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.decoder = decoders.WordPiece()
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "!"}))
    tok = Tokenizer.from_hf_dir(tmp_path)
    ids = tok.encode("helloing world !")
    assert ids == [1, 2, 3, 4] and tok.eos_token_ids == {4}
    det = tok.detokenizer()
    assert isinstance(det, WindowDetokenizer)
    assert "".join([det.add(i) for i in ids] + [det.finish()]) == tok.decode(ids)
