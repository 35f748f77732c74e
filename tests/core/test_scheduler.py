"""Unit tests for tinyfast.core.Scheduler / SchedulerConfig / SchedulerOutput."""

from __future__ import annotations

import numpy as np
import pytest

from tinyfast.core import CapacityError, Scheduler, SchedulerConfig, SchedulerOutput

from .model import check_output_layout, check_tables_vs_refcounts, row_blocks


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def make(num_blocks=64, block_size=4, **kw) -> Scheduler:
    return Scheduler(SchedulerConfig(num_blocks=num_blocks, block_size=block_size, **kw))


def step(s: Scheduler) -> SchedulerOutput:
    out = s.step()
    assert isinstance(out, SchedulerOutput)
    check_output_layout(out, s.config.block_size, s.config.num_blocks)
    live = [int(x) for x in s.running_ids()]
    check_tables_vs_refcounts(s.block_manager, live)
    return out


def update(s: Scheduler, ids, toks) -> list[int]:
    res = s.update(np.asarray(ids, dtype=np.int64), np.asarray(toks, dtype=np.int32))
    assert isinstance(res, np.ndarray) and res.dtype == np.int64, f"update returned {type(res)} {getattr(res, 'dtype', '')}"
    return res.tolist()


def sample_all(s: Scheduler, out: SchedulerOutput, tok: int = 7) -> list[int]:
    ids = out.sample_seq_ids.tolist()
    return update(s, ids, [tok] * len(ids))


def L(a) -> list[int]:
    return np.asarray(a).tolist()


def row(out, i) -> list[int]:
    return row_blocks(out.block_tables[i]).tolist()


def idx(out, sid) -> int:
    return out.seq_ids.tolist().index(sid)


def assert_baseline(s: Scheduler):
    bm = s.block_manager
    assert bm.num_used_blocks == 0, f"{bm.num_used_blocks} blocks still in use"
    assert bm.num_free_blocks == bm.num_blocks
    bm.check_invariants()


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------


def test_config_defaults():
    c = SchedulerConfig(num_blocks=10)
    assert c.num_blocks == 10
    assert c.block_size == 16
    assert c.max_num_seqs == 256
    assert c.max_num_batched_tokens == 2048
    assert c.max_model_len == 160
    assert c.enable_prefix_caching is True
    assert c.hash_seed is None


def test_config_explicit_values():
    c = SchedulerConfig(
        num_blocks=8, block_size=4, max_num_seqs=3, max_num_batched_tokens=5, max_model_len=20,
        enable_prefix_caching=False, hash_seed=7,
    )
    assert (c.num_blocks, c.block_size, c.max_num_seqs, c.max_num_batched_tokens, c.max_model_len) == (8, 4, 3, 5, 20)
    assert c.enable_prefix_caching is False
    assert c.hash_seed == 7
    s = Scheduler(c)
    assert s.config.max_model_len == 20
    assert s.block_manager.num_blocks == 8 and s.block_manager.block_size == 4


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_blocks=0),
        dict(num_blocks=-3),
        dict(num_blocks=8, block_size=0),
        dict(num_blocks=8, max_num_seqs=0),
        dict(num_blocks=8, max_num_batched_tokens=0),
        dict(num_blocks=8, max_model_len=0),
        dict(num_blocks=8, block_size=4, max_model_len=33),  # needs 9 blocks
    ],
)
def test_config_rejects_inconsistent_values(kw):
    with pytest.raises(ValueError):
        SchedulerConfig(**kw)


def test_config_max_model_len_may_use_whole_pool():
    c = SchedulerConfig(num_blocks=8, block_size=4, max_model_len=32)
    assert c.max_model_len == 32


# --------------------------------------------------------------------------
# single request: every output array
# --------------------------------------------------------------------------


def test_empty_step():
    s = make()
    assert not s.has_unfinished()
    out = step(s)
    assert out.num_seqs == 0 and out.num_tokens == 0
    assert L(out.query_start_loc) == [0]
    assert out.token_ids.size == 0 and out.sample_seq_ids.size == 0
    assert out.block_copies.shape == (0, 2)


def test_single_request_prefill_then_decode():
    s = make(num_blocks=16, block_size=4, max_num_batched_tokens=64)
    bm = s.block_manager
    prompt = list(range(10, 20))
    s.add(7, prompt)
    assert s.num_waiting == 1 and s.num_running == 0 and s.has_unfinished()
    assert s.status(7) == "waiting"
    assert L(s.waiting_ids()) == [7] and L(s.running_ids()) == []
    assert L(s.tokens(7)) == prompt and s.tokens(7).dtype == np.int32
    assert s.num_computed_tokens(7) == 0

    out = step(s)
    assert out.num_seqs == 1 and out.num_tokens == 10
    assert L(out.seq_ids) == [7]
    assert L(out.num_scheduled_tokens) == [10]
    assert L(out.num_computed_tokens) == [0]
    assert L(out.context_lens) == [10]
    assert L(out.query_start_loc) == [0, 10]
    assert L(out.token_ids) == prompt
    assert L(out.positions) == list(range(10))
    bt = out.block_tables[0].tolist()
    blocks = row(out, 0)
    assert len(blocks) == 3 and all(b == -1 for b in bt[3:])
    assert blocks == L(bm.block_table(7))
    assert L(out.slot_mapping) == [blocks[p // 4] * 4 + p % 4 for p in range(10)]
    assert L(out.logits_indices) == [9]
    assert L(out.sample_seq_ids) == [7]
    assert out.block_copies.shape == (0, 2)
    assert out.preempted_seq_ids.size == 0
    assert s.status(7) == "running" and s.num_computed_tokens(7) == 10
    assert s.num_running == 1 and s.num_waiting == 0 and L(s.running_ids()) == [7]
    assert bm.match_prefix(prompt) == 8, "full computed blocks are registered at step time"

    assert update(s, [7], [42]) == []
    assert L(s.tokens(7)) == prompt + [42]
    assert s.num_computed_tokens(7) == 10

    out = step(s)
    assert L(out.seq_ids) == [7]
    assert L(out.num_scheduled_tokens) == [1]
    assert L(out.num_computed_tokens) == [10]
    assert L(out.context_lens) == [11]
    assert L(out.query_start_loc) == [0, 1]
    assert L(out.token_ids) == [42]
    assert L(out.positions) == [10]
    assert row(out, 0) == blocks
    assert L(out.slot_mapping) == [blocks[2] * 4 + 2]
    assert L(out.logits_indices) == [0] and L(out.sample_seq_ids) == [7]

    update(s, [7], [43])
    out = step(s)
    assert L(out.positions) == [11] and L(out.token_ids) == [43]
    assert L(out.slot_mapping) == [blocks[2] * 4 + 3]
    assert bm.match_prefix(prompt + [42, 43]) == 12

    update(s, [7], [44])
    out = step(s)  # position 12 opens a fourth block
    b4 = row(out, 0)
    assert len(b4) == 4 and b4[:3] == blocks
    assert L(out.slot_mapping) == [b4[3] * 4]
    assert L(out.context_lens) == [13]
    assert L(s.tokens(7)) == prompt + [42, 43, 44]


def test_add_accepts_numpy_and_list_prompts():
    s = make()
    s.add(1, np.array([1, 2, 3], dtype=np.int32))
    s.add(2, [4, 5])
    out = step(s)
    assert L(out.token_ids) == [1, 2, 3, 4, 5]
    assert L(out.seq_ids) == [1, 2]
    assert L(out.logits_indices) == [2, 4]


def test_update_with_nothing_to_sample():
    s = make(block_size=4, max_num_batched_tokens=4)
    s.add(1, list(range(10)))
    out = step(s)
    assert out.sample_seq_ids.size == 0
    assert update(s, [], []) == []
    assert L(s.tokens(1)) == list(range(10))


# --------------------------------------------------------------------------
# chunked prefill / budgets / ordering
# --------------------------------------------------------------------------


def test_chunked_prefill_over_several_steps():
    s = make(num_blocks=16, block_size=4, max_num_batched_tokens=4)
    bm = s.block_manager
    prompt = list(range(100, 110))
    s.add(1, prompt)

    out = step(s)
    assert L(out.num_scheduled_tokens) == [4] and L(out.num_computed_tokens) == [0]
    assert L(out.token_ids) == prompt[:4] and L(out.positions) == [0, 1, 2, 3]
    assert out.logits_indices.size == 0 and out.sample_seq_ids.size == 0
    assert len(row(out, 0)) == 1
    assert s.num_computed_tokens(1) == 4
    assert bm.match_prefix(prompt) == 4
    with pytest.raises(ValueError):
        update(s, [1], [5])  # not waiting for a token mid-prefill

    out = step(s)
    assert L(out.num_scheduled_tokens) == [4] and L(out.num_computed_tokens) == [4]
    assert L(out.token_ids) == prompt[4:8] and L(out.positions) == [4, 5, 6, 7]
    assert out.sample_seq_ids.size == 0
    assert len(row(out, 0)) == 2

    out = step(s)
    assert L(out.num_scheduled_tokens) == [2] and L(out.num_computed_tokens) == [8]
    assert L(out.context_lens) == [10]
    assert L(out.token_ids) == prompt[8:]
    assert L(out.logits_indices) == [1] and L(out.sample_seq_ids) == [1]
    assert len(row(out, 0)) == 3
    assert update(s, [1], [9]) == []
    out = step(s)
    assert L(out.num_scheduled_tokens) == [1] and L(out.positions) == [10]


def test_chunked_prefill_budget_shared_fcfs():
    s = make(block_size=4, max_num_batched_tokens=8)
    s.add(1, list(range(10)))
    s.add(2, list(range(20, 25)))
    out = step(s)
    assert L(out.seq_ids) == [1] and L(out.num_scheduled_tokens) == [8]
    assert L(s.waiting_ids()) == [2]
    out = step(s)
    assert L(out.seq_ids) == [1, 2]
    assert L(out.num_scheduled_tokens) == [2, 5]
    assert L(out.num_computed_tokens) == [8, 0]
    assert L(out.logits_indices) == [1, 6]
    assert L(out.sample_seq_ids) == [1, 2]
    assert out.num_tokens == 7


def test_waiting_request_gets_partial_chunk_of_leftover_budget():
    s = make(block_size=4, max_num_batched_tokens=8)
    s.add(1, [1, 2, 3])
    s.add(2, list(range(10, 30)))
    out = step(s)
    assert L(out.seq_ids) == [1, 2]
    assert L(out.num_scheduled_tokens) == [3, 5]
    assert L(out.sample_seq_ids) == [1]
    assert s.status(2) == "running" and s.num_computed_tokens(2) == 5


def test_max_num_seqs_respected():
    s = make(max_num_seqs=2, max_num_batched_tokens=64)
    for i in (1, 2, 3):
        s.add(i, [i, i, i])
    out = step(s)
    assert L(out.seq_ids) == [1, 2]
    assert L(s.waiting_ids()) == [3]
    sample_all(s, out)
    out = step(s)
    assert L(out.seq_ids) == [1, 2] and L(out.num_scheduled_tokens) == [1, 1]
    assert s.status(3) == "waiting"
    sample_all(s, out)
    s.finish(1)
    out = step(s)
    assert L(out.seq_ids) == [2, 3]
    assert L(out.num_scheduled_tokens) == [1, 3]


def test_token_budget_limits_decodes_and_admission():
    s = make(max_num_batched_tokens=2)
    s.add(1, [1])
    s.add(2, [2])
    s.add(3, [3])
    out = step(s)
    assert L(out.seq_ids) == [1, 2] and out.num_tokens == 2
    sample_all(s, out)
    out = step(s)
    assert L(out.seq_ids) == [1, 2] and out.num_tokens == 2
    assert s.status(3) == "waiting"
    sample_all(s, out)
    s.finish(2)
    out = step(s)
    assert L(out.seq_ids) == [1, 3]


def test_decode_first_then_prefill_with_fork_and_cow():
    s = make(num_blocks=64, block_size=4, max_num_batched_tokens=8)
    bm = s.block_manager
    p = [1, 2, 3, 4, 5, 6]
    s.add(1, p)
    out = step(s)
    assert L(out.seq_ids) == [1]
    update(s, [1], [100])
    s.add(2, list(range(30, 60)))
    out = step(s)
    assert L(out.seq_ids) == [1, 2]
    assert L(out.num_scheduled_tokens) == [1, 7]
    assert L(out.sample_seq_ids) == [1]

    # parallel sampling: fork seq 1 while it waits for its token
    t1 = L(bm.block_table(1))
    s.fork(1, 3)
    assert s.status(3) == "running"
    assert L(s.tokens(3)) == L(s.tokens(1))
    assert s.num_computed_tokens(3) == 7
    assert L(bm.block_table(3)) == t1
    assert [bm.ref_count(b) for b in t1] == [2, 2]
    assert update(s, [1, 3], [101, 102]) == []
    assert L(s.tokens(1)) == p + [100, 101]
    assert L(s.tokens(3)) == p + [100, 102]

    out = step(s)
    # decodes (oldest first, the forked child is newer) before the running prefill
    assert L(out.seq_ids) == [1, 3, 2], "decode sequences must be scheduled before prefill ones"
    assert L(out.num_scheduled_tokens) == [1, 1, 6]
    assert L(out.num_computed_tokens) == [7, 7, 7]
    assert L(out.positions) == [7, 7] + list(range(7, 13))
    assert L(out.token_ids) == [101, 102] + list(range(37, 43))
    assert L(out.sample_seq_ids) == [1, 3]
    assert L(out.logits_indices) == [0, 1]
    # both wrote position 7 into the shared, partially filled block t1[1]:
    # exactly one copy-on-write, the other keeps the original block
    copies = out.block_copies.tolist()
    assert len(copies) == 1, f"expected one CoW copy, got {copies}"
    src, dst = copies[0]
    assert src == t1[1]
    r1, r3 = row(out, 0), row(out, 1)
    assert r1[0] == r3[0] == t1[0]
    assert {r1[1], r3[1]} == {src, dst}
    assert out.slot_mapping[0] != out.slot_mapping[1]
    assert bm.ref_count(t1[0]) == 2 and bm.ref_count(src) == 1 and bm.ref_count(dst) == 1


def test_fork_requires_parent_waiting_for_token():
    s = make()
    s.add(1, [1, 2, 3])
    with pytest.raises((ValueError, RuntimeError)):
        s.fork(1, 2)  # parent is still waiting (not running)
    out = step(s)
    sample_all(s, out)
    with pytest.raises((ValueError, RuntimeError)):
        s.fork(1, 2)  # running, but its token was already delivered
    assert s.num_running == 1


def test_fcfs_order_of_admission():
    s = make()
    for sid in (5, 3, 9):
        s.add(sid, [sid] * 3)
    assert L(s.waiting_ids()) == [5, 3, 9]
    out = step(s)
    assert L(out.seq_ids) == [5, 3, 9]


def test_fcfs_blocked_head_blocks_later_requests():
    s = make(num_blocks=4, block_size=4, enable_prefix_caching=False)
    s.add(1, list(range(10)))  # 3 blocks
    s.add(2, list(range(20, 29)))  # 3 blocks: cannot fit beside 1
    s.add(3, [50, 51])  # 1 block: would fit, but must not overtake 2
    out = step(s)
    assert L(out.seq_ids) == [1]
    assert L(s.waiting_ids()) == [2, 3], "a blocked waiting head must block later requests (FCFS)"
    sample_all(s, out)
    out = step(s)
    assert L(out.seq_ids) == [1]
    assert L(s.waiting_ids()) == [2, 3]
    sample_all(s, out)
    s.finish(1)
    out = step(s)
    assert L(out.seq_ids) == [2, 3]
    assert s.num_waiting == 0


# --------------------------------------------------------------------------
# prefix caching through the scheduler
# --------------------------------------------------------------------------


def test_prefix_reuse_across_requests():
    s = make(num_blocks=64, block_size=4, max_num_batched_tokens=64)
    bm = s.block_manager
    prompt = list(range(200, 220))  # 20 tokens = 5 full blocks
    s.add(1, prompt)
    out = step(s)
    r1 = row(out, 0)
    sample_all(s, out)
    hits0, misses0 = bm.stats["hits"], bm.stats["misses"]

    s.add(2, prompt)
    out = step(s)
    assert L(out.seq_ids) == [1, 2]
    i = idx(out, 2)
    # lookup limited to len-1 = 19 tokens -> 4 full blocks reused
    assert int(out.num_computed_tokens[i]) == 16
    assert int(out.num_scheduled_tokens[i]) == 4
    lo, hi = int(out.query_start_loc[i]), int(out.query_start_loc[i + 1])
    assert L(out.token_ids[lo:hi]) == prompt[16:]
    assert L(out.positions[lo:hi]) == [16, 17, 18, 19]
    r2 = row(out, i)
    assert r2[:4] == r1[:4] and r2[4] != r1[4]
    assert all(bm.ref_count(b) == 2 for b in r1[:4])
    assert s.num_computed_tokens(2) == 20
    assert bm.stats["hits"] - hits0 == 4
    assert bm.stats["misses"] - misses0 == 0
    assert L(out.sample_seq_ids) == [1, 2]


def test_fully_cached_prompt_still_computes_last_token():
    s = make(num_blocks=64, block_size=4)
    prompt = list(range(8))  # exactly 2 full blocks
    s.add(1, prompt)
    out = step(s)
    sample_all(s, out)
    s.finish(1)
    s.add(2, prompt)
    out = step(s)
    assert L(out.seq_ids) == [2]
    assert L(out.num_computed_tokens) == [4]
    assert L(out.num_scheduled_tokens) == [4]
    assert L(out.sample_seq_ids) == [2]


def test_prefix_cache_respects_extra_key():
    s = make(num_blocks=64, block_size=4)
    prompt = list(range(12))
    s.add(1, prompt, extra_key=11)
    sample_all(s, step(s))
    s.add(2, prompt, extra_key=22)
    out = step(s)
    assert int(out.num_computed_tokens[idx(out, 2)]) == 0
    sample_all(s, out)
    s.add(3, prompt, extra_key=11)
    out = step(s)
    assert int(out.num_computed_tokens[idx(out, 3)]) == 8


def test_skip_prefix_cache_reads_nothing_but_still_registers():
    """Prompt-logprobs requests need every prompt position computed: no hits, also when resumed
    after a preemption; their full blocks still serve later requests."""
    s = make(num_blocks=64, block_size=4)
    prompt = list(range(12))
    s.add(1, prompt)
    sample_all(s, step(s))
    s.add(2, prompt, skip_prefix_cache=True)
    out = step(s)
    assert int(out.num_computed_tokens[idx(out, 2)]) == 0 and s.num_cached_tokens(2) == 0
    assert int(out.num_scheduled_tokens[idx(out, 2)]) == 12
    s.preempt(2)
    out = step(s)
    assert int(out.num_computed_tokens[idx(out, 2)]) == 0
    sample_all(s, out)
    s.finish(1)
    s.finish(2)
    s.add(3, list(range(100, 112)), skip_prefix_cache=True)
    sample_all(s, step(s))
    s.add(4, list(range(100, 112)))
    out = step(s)
    assert int(out.num_computed_tokens[idx(out, 4)]) == 8
    s.block_manager.check_invariants()


def test_prefix_caching_disabled_in_scheduler():
    s = make(num_blocks=64, block_size=4, enable_prefix_caching=False)
    prompt = list(range(12))
    s.add(1, prompt)
    sample_all(s, step(s))
    s.add(2, prompt)
    out = step(s)
    assert int(out.num_computed_tokens[idx(out, 2)]) == 0


# --------------------------------------------------------------------------
# preemption
# --------------------------------------------------------------------------


def test_preemption_newest_goes_to_front_and_recomputes():
    s = make(num_blocks=4, block_size=4, max_model_len=16, enable_prefix_caching=False)
    bm = s.block_manager
    s.add(1, [1] * 7)
    s.add(2, [2] * 7)
    out = step(s)
    assert L(out.seq_ids) == [1, 2]
    assert bm.num_used_blocks == 4
    update(s, [1, 2], [11, 21])
    out = step(s)  # position 7: still inside block 2 of each
    assert L(out.seq_ids) == [1, 2] and out.preempted_seq_ids.size == 0
    update(s, [1, 2], [12, 22])
    tokens2 = [2] * 7 + [21, 22]
    assert L(s.tokens(2)) == tokens2
    s.add(3, [3])  # fits in one block, but arrives after the preemption victim

    out = step(s)  # seq 1 needs a third block: the newest running (2) is preempted
    assert L(out.seq_ids) == [1]
    assert L(out.preempted_seq_ids) == [2]
    assert s.num_preemptions == 1
    assert s.status(2) == "waiting"
    assert L(s.waiting_ids()) == [2, 3], "the preempted sequence goes to the FRONT of waiting"
    assert s.num_computed_tokens(2) == 0
    assert L(s.tokens(2)) == tokens2, "generated tokens survive preemption"
    assert not bm.has_sequence(2)
    assert bm.num_used_blocks == 3
    assert int(out.context_lens[0]) == 9

    update(s, [1], [13])
    s.finish(1)
    out = step(s)
    assert L(out.seq_ids) == [2, 3]
    assert int(out.num_computed_tokens[0]) == 0
    assert int(out.num_scheduled_tokens[0]) == 9
    assert L(out.token_ids[:9]) == tokens2
    assert L(out.positions[:9]) == list(range(9))
    assert L(out.sample_seq_ids) == [2, 3]
    update(s, [2, 3], [23, 31])
    assert L(s.tokens(2)) == tokens2 + [23]


def test_newest_running_preempts_itself():
    s = make(num_blocks=4, block_size=4, max_model_len=16, enable_prefix_caching=False)
    s.add(1, [1] * 6)
    s.add(2, [2] * 8)
    out = step(s)
    assert L(out.seq_ids) == [1, 2]
    update(s, [1, 2], [11, 21])
    out = step(s)  # 1 writes position 6 (room left); 2 needs a 3rd block, none free
    assert L(out.seq_ids) == [1]
    assert L(out.preempted_seq_ids) == [2]
    assert s.status(1) == "running" and s.status(2) == "waiting"
    assert s.num_computed_tokens(2) == 0
    assert L(s.tokens(2)) == [2] * 8 + [21]
    assert s.num_running == 1 and s.num_waiting == 1


def test_preemption_with_prefix_cache_resumes_from_cached_blocks():
    s = make(num_blocks=5, block_size=4, max_model_len=20)
    bm = s.block_manager
    s.add(1, [1] * 7)
    s.add(2, [2] * 7)
    out = step(s)
    update(s, [1, 2], [10, 20])
    out = step(s)
    update(s, [1, 2], [11, 21])
    before = L(bm.block_table(2))
    out = step(s)  # 1 takes the last free block; 2 must preempt itself
    assert L(out.seq_ids) == [1]
    assert L(out.preempted_seq_ids) == [2]
    assert s.status(2) == "waiting"
    check_tables_vs_refcounts(bm, [1])
    update(s, [1], [12])
    s.finish(1)
    out = step(s)
    assert L(out.seq_ids) == [2]
    # its two full computed blocks were cached and survive as evictable
    assert L(out.num_computed_tokens) == [8]
    assert L(out.num_scheduled_tokens) == [1]
    assert row(out, 0)[:2] == before
    assert L(out.token_ids) == [21]


def _decode_fork_and_long_prefill(mbt: int, prompt_len: int):
    """D (decode) + P (chunked prefill) + V = fork(D), the newest running sequence.

    Pool of 4 blocks of 4 slots, prefix caching off. Returns the scheduler after
    the step in which D's copy-on-write took the last free block."""
    s = make(num_blocks=4, block_size=4, max_num_batched_tokens=mbt, enable_prefix_caching=False)
    s.add(1, [1, 2])  # D
    s.add(2, list(range(10, 10 + prompt_len)))  # P
    out = step(s)
    assert L(out.seq_ids) == [1, 2] and L(out.sample_seq_ids) == [1]
    s.fork(1, 3)  # V
    update(s, [1, 3], [7, 8])
    return s


def test_running_prefill_preempts_newest_instead_of_stalling():
    # Step 2: D's CoW takes the last free block; P needs min(11, 8-2) = 6 more
    # tokens -> a 3rd block, none free -> the newest running sequence (V, the
    # fork child) is preempted and P gets its full chunk.
    s = make(num_blocks=4, block_size=4, max_num_batched_tokens=8, enable_prefix_caching=False)
    s.add(1, [1, 2, 3])  # D
    s.add(2, list(range(10, 26)))  # P, 16 tokens
    out = step(s)
    assert L(out.seq_ids) == [1, 2] and L(out.num_scheduled_tokens) == [3, 5]
    s.fork(1, 3)  # V
    update(s, [1, 3], [7, 8])
    out = step(s)
    assert L(out.preempted_seq_ids) == [3], (
        f"P needed a block and none was free: the newest running sequence (3) must be preempted; got "
        f"seq_ids={L(out.seq_ids)} scheduled={L(out.num_scheduled_tokens)} preempted={L(out.preempted_seq_ids)}"
    )
    assert L(out.seq_ids) == [1, 2]
    assert int(out.num_scheduled_tokens[1]) in (6, 7), "P gets min(remaining, budget left)"


def test_prefill_gets_full_chunk_after_preempting_newest():
    # Step 3: D and V decode inside their own blocks; P sits at a block boundary
    # (8 computed) and needs a 3rd block, none free -> V (newest) is preempted,
    # freeing one block: P can then take min(8 remaining, 6-1 budget) tokens up
    # to the 12-slot capacity of its 3 blocks, i.e. 4 tokens, not just 1.
    s = _decode_fork_and_long_prefill(mbt=6, prompt_len=16)
    out = step(s)  # D CoW, V, P 4 tokens -> pool full
    assert L(out.seq_ids) == [1, 3, 2] and L(out.num_scheduled_tokens) == [1, 1, 4]
    assert s.block_manager.num_free_blocks == 0
    update(s, [1, 3], [9, 9])
    out = step(s)
    assert L(out.preempted_seq_ids) == [3]
    assert L(out.seq_ids) == [1, 2]
    assert int(out.num_computed_tokens[1]) == 8
    assert int(out.num_scheduled_tokens[1]) == 4, (
        f"after preempting seq 3 the prefill got {int(out.num_scheduled_tokens[1])} token(s); "
        "budget (4 left) and the freed block allow 4"
    )


def test_explicit_preempt():
    s = make(enable_prefix_caching=False)
    s.add(1, [1, 2, 3, 4, 5])
    out = step(s)
    update(s, [1], [6])
    s.preempt(1)
    assert s.status(1) == "waiting"
    assert s.num_computed_tokens(1) == 0
    assert s.num_preemptions == 1
    assert not s.block_manager.has_sequence(1)
    assert_baseline(s)
    out = step(s)
    assert L(out.seq_ids) == [1]
    assert L(out.token_ids) == [1, 2, 3, 4, 5, 6]
    assert L(out.sample_seq_ids) == [1]


# --------------------------------------------------------------------------
# abort / finish / max_model_len
# --------------------------------------------------------------------------


def test_abort_waiting():
    s = make()
    s.add(1, [1, 2, 3])
    assert s.abort(1) is True
    assert s.num_waiting == 0 and not s.has_unfinished()
    assert s.abort(1) is False
    assert s.abort(12345) is False
    assert_baseline(s)
    assert step(s).num_seqs == 0


def test_abort_running_frees_blocks():
    s = make()
    s.add(1, list(range(10)))
    out = step(s)
    sample_all(s, out)
    assert s.block_manager.num_used_blocks == 3
    assert s.abort(1) is True
    assert not s.has_unfinished() and s.num_running == 0
    assert not s.block_manager.has_sequence(1)
    assert_baseline(s)


def test_abort_mid_chunked_prefill():
    s = make(max_num_batched_tokens=4)
    s.add(1, list(range(10)))
    step(s)
    assert s.abort(1)
    assert_baseline(s)


def test_abort_between_step_and_update():
    s = make()
    s.add(1, [1, 2, 3])
    s.add(2, [4, 5, 6])
    out = step(s)
    assert L(out.sample_seq_ids) == [1, 2]
    assert s.abort(1)
    assert update(s, [1, 2], [7, 8]) == []  # the aborted id is skipped
    assert L(s.tokens(2)) == [4, 5, 6, 8]
    out = step(s)
    assert L(out.seq_ids) == [2]
    assert s.abort(2)
    assert_baseline(s)


def test_finish_frees_blocks():
    s = make()
    s.add(1, list(range(9)))
    out = step(s)
    sample_all(s, out)
    s.finish(1)
    assert not s.has_unfinished()
    assert not s.block_manager.has_sequence(1)
    assert_baseline(s)


def test_update_rejects_sequence_not_waiting_for_token():
    s = make()
    s.add(1, [1, 2, 3])
    with pytest.raises(ValueError):
        update(s, [1], [9])  # never scheduled
    out = step(s)
    update(s, [1], [9])
    with pytest.raises(ValueError):
        update(s, [1], [9])  # already got its token
    assert L(s.tokens(1)) == [1, 2, 3, 9]


def test_max_model_len_auto_finish():
    s = make(num_blocks=4, block_size=4, max_model_len=8)
    s.add(1, list(range(6)))
    out = step(s)
    assert update(s, [1], [6]) == []
    out = step(s)
    assert L(out.positions) == [6]
    assert update(s, [1], [7]) == [1], "reaching max_model_len must finish the sequence and report it"
    assert not s.has_unfinished()
    assert not s.block_manager.has_sequence(1)
    assert_baseline(s)
    assert step(s).num_seqs == 0


def test_prompt_of_exactly_max_model_len():
    s = make(num_blocks=4, block_size=4, max_model_len=8)
    s.add(1, list(range(8)))
    out = step(s)
    assert L(out.sample_seq_ids) == [1]
    assert update(s, [1], [9]) == [1]
    assert not s.has_unfinished()
    assert_baseline(s)


def test_capacity_errors():
    s = make(num_blocks=4, block_size=4, max_model_len=8)
    with pytest.raises(CapacityError):
        s.add(1, [])
    with pytest.raises(CapacityError):
        s.add(2, np.array([], dtype=np.int32))
    with pytest.raises(CapacityError):
        s.add(3, list(range(9)))
    with pytest.raises(ValueError):  # CapacityError is a ValueError
        s.add(4, list(range(9)))
    assert s.num_waiting == 0 and not s.has_unfinished()
    s.add(3, list(range(8)))  # the id was not consumed by the failed add
    assert s.num_waiting == 1


def test_duplicate_request_id():
    s = make()
    s.add(1, [1, 2])
    with pytest.raises(ValueError):
        s.add(1, [3, 4])
    out = step(s)
    with pytest.raises(ValueError):
        s.add(1, [3, 4])  # running
    assert s.num_running == 1 and s.num_waiting == 0


def test_many_requests_drain_to_baseline():
    s = make(num_blocks=12, block_size=4, max_num_seqs=4, max_num_batched_tokens=16, max_model_len=24)
    rng = np.random.default_rng(0)
    targets = {}
    for i in range(10):
        n = int(rng.integers(1, 12))
        s.add(i, rng.integers(0, 5, n).astype(np.int32))
        targets[i] = int(rng.integers(n + 1, 25))
    lengths = {i: len(s.tokens(i)) for i in targets}
    for _ in range(2000):
        if not s.has_unfinished():
            break
        out = step(s)
        ids = out.sample_seq_ids.tolist()
        done = set(update(s, ids, rng.integers(0, 5, len(ids)).astype(np.int32)))
        for i in ids:
            lengths[i] += 1
            assert (i in done) == (lengths[i] >= 24), f"seq {i} has {lengths[i]} tokens, auto-finished: {i in done}"
            if i in done:
                continue
            if lengths[i] >= targets[i]:
                s.finish(i)
    assert not s.has_unfinished()
    assert_baseline(s)
