"""Long eager steps are evaluated block by block: the same logits bit for bit, less peak memory."""

import mlx.core as mx
import numpy as np

from tiny_checkpoint import write_tiny_llama
from tinyfast.core import Scheduler, SchedulerConfig
from tinyfast.engine import ModelRunner
from tinyfast.models import load_model


def _prefill(model, prompts, per_layer_from: int):
    runner = ModelRunner(model, num_blocks=64, block_size=16, compile_decode=False)
    runner.EVAL_EACH_LAYER_TOKENS = per_layer_from
    sched = Scheduler(SchedulerConfig(num_blocks=64, block_size=16, max_num_seqs=8, max_num_batched_tokens=4096,
                                      enable_prefix_caching=False))
    for i, p in enumerate(prompts):
        sched.add(i, p)
    out = sched.step()
    mx.eval(runner.kv_caches)
    mx.reset_peak_memory()
    logits = np.array(runner.execute(out))
    return logits, mx.get_peak_memory(), [np.array(k) for k, _ in runner.kv_caches]


def test_block_by_block_matches_one_graph_with_less_memory(tmp_path):
    model, _ = load_model(write_tiny_llama(tmp_path / "m", layers=6, hidden=128, intermediate=512))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 200, n).tolist() for n in (300, 45, 170)]
    one_graph, peak_one, kv_one = _prefill(model, prompts, per_layer_from=10**9)
    per_layer, peak_layer, kv_layer = _prefill(model, prompts, per_layer_from=64)
    np.testing.assert_array_equal(per_layer, one_graph)
    for a, b in zip(kv_layer, kv_one):
        np.testing.assert_array_equal(a, b)
    assert peak_layer < peak_one, (peak_layer, peak_one)
