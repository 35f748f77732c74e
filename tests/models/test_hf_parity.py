"""tinyfast vs transformers (CPU torch, float32) on tiny random models loaded from safetensors.

One prompt: logits at every position. A batch: prompts of mixed lengths sharing
prefixes, run by the real Scheduler with chunked prefill (16-token budget, 4-token
blocks) and prefix-cache hits, greedy for 20 tokens: every token equals
``model.generate(do_sample=False)`` and every sampled row of logits matches.
"""

import mlx.core as mx
import numpy as np
import pytest
from models import tiny_models as tm
from models.driver import greedy, prompt_step

from tinyfast.core import Scheduler, SchedulerConfig
from tinyfast.engine import ModelRunner

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3", "mistral"]
# Decode steps run the mx.compile'd forward for these families (the two block structures) and
# eagerly for the others: on a machine without MLX's kernel cache (/tmp/mlx) every new fused
# kernel costs ~2 s of C++ compilation, and the variants add nothing the eager run does not check.
COMPILED = {"llama", "gemma3"}
ATOL = 5e-5  # float32 end to end; observed ~2e-6 on logits of magnitude ~3


@pytest.mark.parametrize("name", FAMILIES)
def test_prompt_logits_match_transformers(tiny_hf, name):
    hf, model, _ = tiny_hf(name)
    prompt = [int(x) for x in np.random.default_rng(1).integers(3, 320, 23)]
    runner = ModelRunner(model, num_blocks=16, block_size=4, kv_dtype=mx.float32)
    logits = runner.execute(prompt_step(prompt, block_size=4))
    assert logits.shape == (23, 320) and logits.dtype == mx.float32
    np.testing.assert_allclose(np.array(logits), tm.hf_logits(hf, prompt), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_chunked_prefix_cached_greedy_matches_generate(tiny_hf, name):
    hf, model, _ = tiny_hf(name)
    rng = np.random.default_rng(2)
    # 13-token shared prefix = 3 full blocks of 4: later prompts hit the cache.
    prompts = tm.random_prompts(rng, 320, [13, 17, 30, 5, 22], shared_prefix=13)
    prompts[3] = [int(x) for x in rng.integers(3, 320, 5)]
    runner = ModelRunner(model, num_blocks=96, block_size=4, kv_dtype=mx.float32, compile_decode=name in COMPILED)
    sched = Scheduler(SchedulerConfig(num_blocks=96, block_size=4, max_num_seqs=8, max_num_batched_tokens=16,
                                      hash_seed=1))
    record = {}
    got = greedy(model, prompts, 20, runner=runner, scheduler=sched, record=record)
    assert sched.block_manager.stats["hits"] >= 6, sched.block_manager.stats
    for i, p in enumerate(prompts):
        want, want_logits = tm.hf_generate(hf, p, 20)
        assert got[i] == want, f"prompt {i}"
        np.testing.assert_allclose(np.stack(record[i]), want_logits, atol=ATOL, rtol=0)
    sched.block_manager.check_invariants()


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_compiled_decode_matches_eager(tiny_hf, name):
    _, model, _ = tiny_hf(name)
    prompts = tm.random_prompts(np.random.default_rng(3), 320, [9, 3, 14])
    rec_c, rec_e = {}, {}
    a = greedy(model, prompts, 12, block_size=4, record=rec_c, compile_decode=True)
    b = greedy(model, prompts, 12, block_size=4, record=rec_e, compile_decode=False)
    assert a == b
    for i in rec_c:
        np.testing.assert_allclose(np.stack(rec_c[i]), np.stack(rec_e[i]), atol=1e-5, rtol=0)


def test_copy_on_write_fork_continues_like_the_parent(tiny_hf):
    """A forked sequence shares a partly filled block; the step's block copy keeps both right."""
    hf, model, _ = tiny_hf("llama")
    prompt = [int(x) for x in np.random.default_rng(4).integers(3, 320, 10)]  # 2.5 blocks of 4
    want, _ = tm.hf_generate(hf, prompt, 8)
    runner = ModelRunner(model, num_blocks=32, block_size=4, kv_dtype=mx.float32)
    sched = Scheduler(SchedulerConfig(num_blocks=32, block_size=4, max_num_batched_tokens=64))
    sched.add(0, prompt)
    step = sched.step()
    tok = np.array(runner.execute(step)).argmax(-1).astype(np.int32)
    sched.fork(0, 1)  # between the forward and the update: both get the sampled token
    sched.update(np.array([0, 1]), np.repeat(tok, 2))
    out = {0: [int(tok[0])], 1: [int(tok[0])]}
    copies = 0
    while len(out[1]) < 8:
        step = sched.step()
        copies += len(step.block_copies)
        tok = np.array(runner.execute(step)).argmax(-1).astype(np.int32)
        for sid, t in zip(step.sample_seq_ids, tok):
            out[int(sid)].append(int(t))
        sched.update(np.array(step.sample_seq_ids), tok)
    assert copies >= 1
    assert out[0] == want and out[1] == want
