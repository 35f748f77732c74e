"""The C++ sampler against NumPy references of each sampling rule."""

import numpy as np
import pytest

from tinyfast import _C


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _penalized(row, prompt, output, rep=1.0, pres=0.0, freq=0.0):
    """HF repetition penalty on prompt+output tokens; OpenAI presence/frequency on output tokens."""
    x = row.astype(np.float32).copy()
    if rep != 1.0:
        for t in set(prompt.tolist()) | set(output.tolist()):
            x[t] = x[t] / rep if x[t] > 0 else x[t] * rep
    ids, counts = np.unique(output, return_counts=True)
    x[ids] -= np.float32(pres) + np.float32(freq) * counts.astype(np.float32)
    return x


def _allowed(row, temperature, top_k=0, top_p=1.0, min_p=0.0):
    """Token ids the sampler may return under top-k, min-p then top-p (applied in that order)."""
    z = row.astype(np.float64) / temperature
    order = np.lexsort((np.arange(len(z)), -z))  # best first, ties by lower id
    keep = order[:top_k] if 0 < top_k < len(z) else order
    m = z[keep].max()
    if min_p > 0:
        keep = keep[z[keep] >= m + np.log(min_p)]
    if top_p < 1.0:
        w = np.exp(z[keep] - m)
        cum = np.cumsum(w)
        cut = int(np.searchsorted(cum, top_p * w.sum())) + 1
        keep = keep[:cut]
    return set(keep.tolist())


def _sample(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, rep=1.0, pres=0.0, freq=0.0,
            seeds=None, prompts=None, outputs=None, num_logprobs=-1, states=None):
    K = logits.shape[0]
    full = lambda v, dt: np.full(K, v, dtype=dt)  # noqa: E731
    if states is None:
        seeds = seeds if seeds is not None else range(K)
        states = np.stack([_C.seed_rng_state(s) for s in seeds])
    empty = np.zeros(0, np.int32)
    return _C.sample(
        np.ascontiguousarray(logits, dtype=np.float32), full(temperature, np.float32), full(top_k, np.int32),
        full(top_p, np.float32), full(min_p, np.float32), full(rep, np.float32), full(pres, np.float32),
        full(freq, np.float32), states, prompts or [empty] * K, outputs or [empty] * K, num_logprobs,
    )


@pytest.fixture
def logits():
    return np.random.default_rng(0).standard_normal((6, 50)).astype(np.float32) * 3


def test_greedy_is_argmax_with_lowest_id_on_ties(logits):
    logits[2, [7, 9]] = 100.0
    tokens, *_ = _sample(logits, temperature=0.0)
    np.testing.assert_array_equal(tokens, logits.argmax(-1))


def _scan_argmax(row):
    """The defining scan: best = 0, then every later id strictly greater than the best wins."""
    best = 0
    for i in range(1, len(row)):
        if row[i] > row[best]:
            best = i
    return best


def test_greedy_tokens_match_the_scan_with_ties_nan_and_inf():
    rng = np.random.default_rng(3)
    rows = []
    for n in (1, 7, 8, 9, 50, 263):
        for _ in range(20):
            row = rng.integers(-3, 4, n).astype(np.float32)  # many ties
            row[rng.random(n) < 0.2] = np.nan
            row[rng.random(n) < 0.1] = -np.inf
            row[rng.random(n) < 0.05] = np.inf
            rows.append(row)
    rows += [np.full(5, np.nan, np.float32), np.full(9, -np.inf, np.float32),
             np.array([np.nan, 1, 2, 2], np.float32)]
    for row in rows:
        x = row[None]
        assert _C.greedy_tokens(x)[0] == _scan_argmax(row), row
        tokens, *_ = _sample(x, temperature=0.0)
        assert tokens[0] == _scan_argmax(row), row


def test_logprobs_are_the_raw_log_softmax(logits):
    tokens, lp, top_ids, top_lp = _sample(logits, temperature=0.7, num_logprobs=5, rep=1.3)
    ref = _log_softmax(logits)
    np.testing.assert_allclose(lp, ref[np.arange(len(tokens)), tokens], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(top_ids, np.argsort(-ref, axis=-1, kind="stable")[:, :5])
    np.testing.assert_allclose(top_lp, np.take_along_axis(ref, top_ids.astype(np.int64), -1), rtol=1e-5, atol=1e-5)


def test_no_logprobs_requested_gives_nan(logits):
    _, lp, top_ids, _ = _sample(logits, temperature=0.0, num_logprobs=-1)
    assert np.isnan(lp).all() and top_ids.shape == (6, 0)


def test_penalties_match_the_reference(logits):
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 50, 8).astype(np.int32) for _ in range(6)]
    outputs = [rng.integers(0, 50, 12).astype(np.int32) for _ in range(6)]
    tokens, *_ = _sample(logits, temperature=0.0, rep=1.7, pres=0.5, freq=0.8, prompts=prompts, outputs=outputs)
    expected = [_penalized(logits[i], prompts[i], outputs[i], 1.7, 0.5, 0.8).argmax() for i in range(6)]
    np.testing.assert_array_equal(tokens, expected)


@pytest.mark.parametrize(
    "kw", [dict(top_k=3), dict(top_p=0.5), dict(min_p=0.2), dict(top_k=10, top_p=0.8, min_p=0.05)]
)
def test_filters_never_sample_outside_the_allowed_set(logits, kw):
    state = np.stack([_C.seed_rng_state(100 + i) for i in range(6)])
    allowed = [_allowed(logits[i], 0.9, **kw) for i in range(6)]
    for _ in range(200):
        tokens, *_ = _sample(logits, temperature=0.9, states=state, **kw)
        for i, t in enumerate(tokens):
            assert t in allowed[i]


def test_sampling_frequencies_follow_the_distribution():
    row = np.log(np.array([0.5, 0.25, 0.125, 0.0625, 0.0625], np.float32))[None]
    state = _C.seed_rng_state(7)[None].copy()
    n = 20000
    counts = np.zeros(5)
    for _ in range(n):
        t, *_ = _sample(row, temperature=1.0, states=state)
        counts[t[0]] += 1
    expected = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625]) * n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 25.0  # 4 dof; p < 1e-4 for a correct sampler to exceed


def test_temperature_sharpens_the_distribution():
    row = np.log(np.array([0.6, 0.4], np.float32))[None]
    state = _C.seed_rng_state(3)[None].copy()
    cold = sum(_sample(row, temperature=0.2, states=state)[0][0] == 0 for _ in range(2000))
    # p(0) at T=0.2 is 0.6^5 / (0.6^5 + 0.4^5) ~ 0.884
    assert 0.85 * 2000 < cold < 0.92 * 2000


def test_seeded_rows_are_reproducible_and_batch_invariant(logits):
    alone = [_sample(logits[i : i + 1], temperature=1.0, top_p=0.9, seeds=[42 + i])[0][0] for i in range(6)]
    batch = _sample(logits, temperature=1.0, top_p=0.9, seeds=[42 + i for i in range(6)])[0]
    np.testing.assert_array_equal(batch, alone)


def test_rng_state_advances_in_place(logits):
    state = np.stack([_C.seed_rng_state(5)])
    before = state.copy()
    _sample(logits[:1], temperature=1.0, states=state)
    assert not np.array_equal(state, before)


def test_mismatched_rows_raise(logits):
    with pytest.raises(ValueError, match="rows"):
        _C.sample(
            logits, np.ones(2, np.float32), np.zeros(6, np.int32), np.ones(6, np.float32), np.zeros(6, np.float32),
            np.ones(6, np.float32), np.zeros(6, np.float32), np.zeros(6, np.float32),
            np.zeros((6, 4), np.uint64), [np.zeros(0, np.int32)] * 6, [np.zeros(0, np.int32)] * 6,
        )


def test_out_of_vocab_history_tokens_are_ignored(logits):
    bad = [np.array([-5, 10_000], np.int32)] * 6
    tokens, *_ = _sample(logits, temperature=0.0, rep=2.0, pres=1.0, prompts=bad, outputs=bad)
    np.testing.assert_array_equal(tokens, logits.argmax(-1))
