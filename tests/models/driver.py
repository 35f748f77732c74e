"""Drives the real Scheduler + ModelRunner with argmax sampling (the engine loop, minus sampling options)."""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx
import numpy as np

from tinyfast.core import Scheduler, SchedulerConfig
from tinyfast.engine import ModelRunner


def greedy(model, prompts, max_new_tokens, *, num_blocks=64, block_size=16, max_num_batched_tokens=512,
           max_num_seqs=64, kv_dtype=mx.float32, runner=None, scheduler=None, record=None, compile_decode=True):
    """Greedy continuations of every prompt, batched by the scheduler as it sees fit.

    ``record`` (a dict) receives, per sequence id, the logits of every sampled position.
    """
    runner = runner or ModelRunner(model, num_blocks, block_size, kv_dtype, compile_decode=compile_decode)
    sched = scheduler or Scheduler(SchedulerConfig(num_blocks=runner.num_blocks, block_size=runner.block_size,
                                                   max_num_seqs=max_num_seqs,
                                                   max_num_batched_tokens=max_num_batched_tokens, hash_seed=1))
    out = {i: [] for i in range(len(prompts))}
    for i, p in enumerate(prompts):
        sched.add(i, list(p))
    while sched.has_unfinished():
        step = sched.step()
        logits = runner.execute(step)
        assert logits.shape == (len(step.logits_indices), model.config.vocab_size) and logits.dtype == mx.float32
        if not len(step.sample_seq_ids):
            continue
        lg = np.array(logits)
        tokens = lg.argmax(-1).astype(np.int32)
        ids = np.array(step.sample_seq_ids)
        for sid, tok, row in zip(ids, tokens, lg):
            out[int(sid)].append(int(tok))
            if record is not None:
                record.setdefault(int(sid), []).append(row)
        sched.update(ids, tokens)
        for sid in ids:
            if len(out[int(sid)]) >= max_new_tokens:
                sched.finish(int(sid))
    return [out[i] for i in range(len(prompts))]


def prompt_step(token_ids, block_size=16, first_block=0):
    """A hand-made step: one sequence's whole prompt in fresh blocks, logits at every position."""
    t = len(token_ids)
    nblk = -(-t // block_size)
    return SimpleNamespace(
        block_copies=np.zeros((0, 2), np.int32), token_ids=np.asarray(token_ids, np.int32),
        positions=np.arange(t, dtype=np.int32),
        slot_mapping=(first_block * block_size + np.arange(t)).astype(np.int32),
        block_tables=(first_block + np.arange(nblk, dtype=np.int32))[None], context_lens=np.array([t], np.int32),
        query_start_loc=np.array([0, t], np.int32), num_scheduled_tokens=np.array([t], np.int32),
        logits_indices=np.arange(t, dtype=np.int32))
