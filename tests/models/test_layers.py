"""Layers and the model runner on their own: rope frequencies vs transformers, rope at ragged
positions, quantized embedding lookup, padding that must not touch the KV pools."""

from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest
from reference import quant as quant_ref

from tinyfast.engine import ModelRunner
from tinyfast.engine.model_runner import decode_bucket, width_bucket
from tinyfast.layers import Embedding, RopeParams, RotaryEmbedding, inv_frequencies
from tinyfast.ops import QuantizedWeight, dequantize

# ---------------------------------------------------------------- rope


ROPE_CASES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "yarn_mscale": {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 128,
                    "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 2},
}


@pytest.mark.parametrize("case", ROPE_CASES)
def test_rope_frequencies_match_transformers(case):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from tinyfast.models.config import hf_model_config

    scaling = ROPE_CASES[case]
    cfg = transformers.LlamaConfig(hidden_size=256, num_attention_heads=2, num_hidden_layers=1, vocab_size=10,
                                   intermediate_size=8, max_position_embeddings=512, rope_theta=50000.0,
                                   rope_scaling=scaling)
    _, opts = hf_model_config({**cfg.to_dict(), "architectures": ["LlamaForCausalLM"]})
    inv, factor = inv_frequencies(opts.rope)
    if scaling is None:
        want = 1.0 / 50000.0 ** (np.arange(0, 128, 2, dtype=np.float64) / 128)
        want_factor = 1.0
    else:
        t, want_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](cfg, "cpu")
        want = t.double().numpy()
    np.testing.assert_allclose(inv, want, rtol=2e-6)
    assert factor == pytest.approx(want_factor, rel=1e-6)


def _rope_reference(x, pos, inv, traditional):
    """NumPy rope: NeoX halves or GPT-J interleaved pairs, at each token's position."""
    ang = pos[:, None].astype(np.float64) * inv[None]  # [T, D/2]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x = x.astype(np.float64)
    if traditional:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
        return out
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return np.concatenate([a * c - b * s, a * s + b * c], -1)


@pytest.mark.parametrize("traditional", [False, True])
def test_rope_at_ragged_positions(traditional):
    rng = np.random.default_rng(0)
    # Two prefill chunks and three decode tokens, positions in any order.
    pos = np.array([5, 6, 7, 0, 1, 2, 3, 300, 17, 4095], np.int32)
    x = rng.standard_normal((len(pos), 3, 64)).astype(np.float32)
    p = RopeParams(dims=64, base=10000.0, traditional=traditional)
    got = np.array(RotaryEmbedding(p)(mx.array(x), mx.array(pos)))
    want = _rope_reference(x, pos, inv_frequencies(p)[0], traditional)
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())
    # Each token alone gives the same bits as inside the batch.
    one = np.array(RotaryEmbedding(p)(mx.array(x[7:8]), mx.array(pos[7:8])))
    assert (one == got[7:8]).all()


# ---------------------------------------------------------------- embedding


def _quantized_table(fmt, rows=40, dim=256, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, dim)).astype(np.float32)
    if fmt.startswith("affine"):
        return QuantizedWeight.quantize_affine(mx.array(w), bits=int(fmt[6:]), group_size=64)
    return QuantizedWeight(quant_ref.quantize(w, fmt), fmt, (rows, dim))


@pytest.mark.parametrize("fmt", ["q8_0", "q5_0", "q4_0", "q4_k", "q6_k", "affine4", "affine8"])
def test_quantized_embedding_lookup_is_the_dequantized_rows(fmt):
    table = _quantized_table(fmt)
    ids = mx.array([[3, 0, 39], [3, 7, 12]], dtype=mx.int32)
    got = Embedding(table)(ids)
    want = mx.take(dequantize(table), ids.reshape(-1), axis=0).reshape(2, 3, -1)
    assert got.shape == (2, 3, 256) and got.dtype == mx.float32
    assert mx.array_equal(got, want).item()


def test_quantized_embedding_lookup_under_compile():
    table = _quantized_table("q8_0")
    f = mx.compile(lambda ids: Embedding(table)(ids))
    ids = mx.array([1, 2, 39], dtype=mx.int32)
    assert mx.array_equal(f(ids), Embedding(table)(ids)).item()


# ---------------------------------------------------------------- runner


def test_buckets():
    assert [decode_bucket(n) for n in (1, 2, 3, 5, 8, 9, 16, 17, 100)] == [1, 2, 4, 8, 8, 16, 16, 24, 104]
    assert [width_bucket(n) for n in (1, 2, 3, 4, 5, 9, 64, 65)] == [1, 2, 4, 4, 8, 16, 64, 128]


def test_kv_cache_bytes_per_block(tiny_hf):
    _, model, _ = tiny_hf("qwen3")
    c = model.config  # 2 layers, 2 kv heads, head_dim 32
    assert ModelRunner.kv_cache_bytes_per_block(c, 16) == 2 * 16 * 2 * (32 + 32) * 2
    assert ModelRunner.kv_cache_bytes_per_block(c, 16, mx.float32) == 2 * 16 * 2 * (32 + 32) * 4
    r = ModelRunner(model, num_blocks=8, block_size=16)
    assert sum(k.nbytes + v.nbytes for k, v in r.kv_caches) == 8 * ModelRunner.kv_cache_bytes_per_block(c, 16)


def test_empty_batch_gives_no_logits(tiny_hf):
    _, model, _ = tiny_hf("llama")
    r = ModelRunner(model, num_blocks=4, block_size=4)
    empty = SimpleNamespace(block_copies=np.zeros((0, 2), np.int32), token_ids=np.zeros(0, np.int32),
                            num_scheduled_tokens=np.zeros(0, np.int32), logits_indices=np.zeros(0, np.int32))
    out = r.execute(empty)
    assert out.shape == (0, 320) and out.dtype == mx.float32


def test_padded_decode_touches_only_real_slots(tiny_hf):
    """3 sequences padded to a bucket of 4: only their 3 slots change in any pool."""
    _, model, _ = tiny_hf("gemma3")
    r = ModelRunner(model, num_blocks=8, block_size=4, kv_dtype=mx.float32)
    rng = np.random.default_rng(5)
    for k, v in r.kv_caches:  # fill the pools with known data, in place
        np.array(k, copy=False)[...] = rng.standard_normal(k.shape)
        np.array(v, copy=False)[...] = rng.standard_normal(v.shape)
    before = [(np.array(k), np.array(v)) for k, v in r.kv_caches]
    step = SimpleNamespace(
        block_copies=np.zeros((0, 2), np.int32), num_scheduled_tokens=np.ones(3, np.int32),
        token_ids=np.array([5, 6, 7], np.int32), positions=np.array([4, 1, 6], np.int32),
        slot_mapping=np.array([1 * 4 + 0, 2 * 4 + 1, 5 * 4 + 2], np.int32),
        block_tables=np.array([[0, 1], [2, -1], [3, 5]], np.int32), context_lens=np.array([5, 2, 7], np.int32),
        query_start_loc=np.arange(4, dtype=np.int32), logits_indices=np.arange(3, dtype=np.int32))
    assert decode_bucket(3) == 4
    logits = r.execute(step)
    assert logits.shape == (3, 320)
    changed = np.zeros(8 * 4, bool)
    for (k, v), (k0, v0) in zip(r.kv_caches, before):
        for a, a0 in ((np.array(k), k0), (np.array(v), v0)):
            changed |= (a != a0).reshape(32, -1).any(-1)
    assert sorted(np.flatnonzero(changed)) == [4, 9, 22]
