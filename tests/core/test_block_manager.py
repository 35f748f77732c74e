"""Unit and property tests for tinyfast.core.BlockManager (paged KV blocks + prefix cache)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from tinyfast.core import BlockManager, CapacityError, NoFreeBlocksError

from .model import BMModel, BMSeq, PrefixIds, cdiv, check_tables_vs_refcounts


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def table(bm, sid) -> list[int]:
    t = bm.block_table(sid)
    assert isinstance(t, np.ndarray), type(t)
    assert t.dtype == np.int32, t.dtype
    return t.tolist()


def copies_of(ret) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in c) for c in ret]


def prefill(bm, sid, toks, extra_key=0, cache=True) -> int:
    """allocate + cover all tokens + register full blocks; returns cached tokens."""
    cached = bm.allocate(sid, toks, extra_key=extra_key)
    copies = bm.append_slots(sid, len(toks))
    assert copies_of(copies) == []
    if cache:
        bm.cache_full_blocks(sid, toks, len(toks))
    return cached


def state(bm, seqs=()):
    return (
        bm.num_free_blocks,
        bm.num_evictable_blocks,
        bm.num_used_blocks,
        tuple(sorted(bm.stats.items())),
        tuple(bm.ref_count(b) for b in range(bm.num_blocks)),
        tuple(tuple(table(bm, s)) for s in seqs),
    )


A = [1, 2, 3, 4]
B = [5, 6, 7, 8]


# --------------------------------------------------------------------------
# construction, errors
# --------------------------------------------------------------------------


def test_error_type_hierarchy():
    assert issubclass(CapacityError, ValueError)
    assert issubclass(NoFreeBlocksError, RuntimeError)


def test_fresh_manager_properties():
    bm = BlockManager(8, 4)
    assert bm.num_blocks == 8
    assert bm.block_size == 4
    assert bm.num_free_blocks == 8
    assert bm.num_evictable_blocks == 0
    assert bm.num_used_blocks == 0
    assert bm.usage == 0.0
    stats = bm.stats
    assert isinstance(stats, dict)
    assert stats["hits"] == 0 and stats["misses"] == 0 and stats["evictions"] == 0
    assert all(bm.ref_count(b) == 0 for b in range(8))
    assert not bm.has_sequence(0)
    bm.check_invariants()


@pytest.mark.parametrize("num_blocks,block_size", [(0, 4), (4, 0), (-1, 4), (4, -2), (0, 0)])
def test_invalid_constructor_args(num_blocks, block_size):
    with pytest.raises(ValueError):
        BlockManager(num_blocks, block_size)


def test_constructor_keywords_and_seed():
    bm = BlockManager(num_blocks=4, block_size=2, enable_prefix_caching=True, hash_seed=1234)
    prefill(bm, 1, A)
    assert bm.match_prefix(A) == 4


def test_ref_count_out_of_range_raises_index_error():
    bm = BlockManager(8, 4)
    for bad in (-1, 8, 100):
        with pytest.raises(IndexError):
            bm.ref_count(bad)


def test_allocate_duplicate_id_raises():
    bm = BlockManager(8, 4)
    bm.allocate(1, [1, 2, 3])
    with pytest.raises(ValueError):
        bm.allocate(1, [1, 2, 3])
    bm.check_invariants()


def test_free_unknown_raises_key_error():
    bm = BlockManager(8, 4)
    with pytest.raises(KeyError):
        bm.free(3)
    bm.allocate(3, [1])
    bm.free(3)
    with pytest.raises(KeyError):
        bm.free(3)  # double free of a sequence


# --------------------------------------------------------------------------
# allocation accounting
# --------------------------------------------------------------------------


def test_allocate_append_free_accounting():
    bm = BlockManager(8, 4)
    toks = list(range(100, 110))  # 10 tokens
    assert bm.allocate(1, toks) == 0
    assert bm.has_sequence(1)
    assert table(bm, 1) == [], "allocate must not allocate blocks beyond prefix hits"
    assert bm.num_used_blocks == 0 and bm.num_free_blocks == 8

    assert bm.can_append(1, 10)
    assert copies_of(bm.append_slots(1, 10)) == []
    t = table(bm, 1)
    assert len(t) == 3 and len(set(t)) == 3 and all(0 <= b < 8 for b in t)
    assert bm.num_used_blocks == 3 and bm.num_free_blocks == 5
    assert bm.usage == pytest.approx(3 / 8)
    assert all(bm.ref_count(b) == 1 for b in t)

    # still within the third block: nothing new
    assert copies_of(bm.append_slots(1, 12)) == []
    assert table(bm, 1) == t
    # slot 13 needs a 4th block; the old ones stay in place
    bm.append_slots(1, 13)
    t2 = table(bm, 1)
    assert t2[:3] == t and len(t2) == 4
    assert bm.num_used_blocks == 4
    bm.check_invariants()

    bm.free(1)
    assert not bm.has_sequence(1)
    assert bm.num_used_blocks == 0 and bm.num_free_blocks == 8
    assert bm.num_evictable_blocks == 0, "never-hashed blocks must go to the free list, not the evictable pool"
    assert all(bm.ref_count(b) == 0 for b in range(8))
    bm.check_invariants()


def test_two_sequences_get_disjoint_blocks():
    bm = BlockManager(8, 4)
    prefill(bm, 1, [1] * 6, cache=False)
    prefill(bm, 2, [2] * 6, cache=False)
    assert set(table(bm, 1)).isdisjoint(table(bm, 2))
    assert bm.num_used_blocks == 4
    check_tables_vs_refcounts(bm, [1, 2])


def test_numpy_token_inputs():
    bm = BlockManager(8, 4)
    toks = np.arange(10, dtype=np.int32)
    assert bm.allocate(1, toks) == 0
    bm.append_slots(1, 10)
    bm.cache_full_blocks(1, toks, 10)
    assert bm.match_prefix(toks) == 8
    assert bm.match_prefix(list(range(10))) == 8
    assert bm.allocate(2, toks) == 8


# --------------------------------------------------------------------------
# prefix cache
# --------------------------------------------------------------------------


def test_prefix_reuse_across_two_sequences():
    bm = BlockManager(16, 4)
    toks = list(range(10))
    assert prefill(bm, 1, toks) == 0
    t1 = table(bm, 1)
    assert bm.match_prefix(toks) == 8

    cached = bm.allocate(2, toks)
    assert cached == 8
    assert table(bm, 2) == t1[:2], "the second sequence must reuse the same physical blocks"
    assert bm.ref_count(t1[0]) == 2 and bm.ref_count(t1[1]) == 2
    assert bm.ref_count(t1[2]) == 1
    assert bm.num_used_blocks == 3

    bm.append_slots(2, 10)
    t2 = table(bm, 2)
    assert t2[:2] == t1[:2] and t2[2] != t1[2], "partial last block is private"
    check_tables_vs_refcounts(bm, [1, 2])

    bm.free(1)
    assert bm.ref_count(t1[0]) == 1 and bm.ref_count(t1[2]) == 0
    bm.free(2)
    assert bm.num_used_blocks == 0
    assert bm.num_evictable_blocks == 2, "the two hashed full blocks stay cached (evictable)"
    assert bm.num_free_blocks == 16
    assert bm.match_prefix(toks) == 8
    bm.check_invariants()


def test_max_cached_tokens_limits_reuse():
    bm = BlockManager(16, 4)
    toks = list(range(12))
    prefill(bm, 1, toks)
    assert bm.match_prefix(toks) == 12
    assert bm.allocate(2, toks, max_cached_tokens=11) == 8
    assert len(table(bm, 2)) == 2
    assert bm.allocate(3, toks, max_cached_tokens=12) == 12
    assert bm.allocate(4, toks, max_cached_tokens=-1) == 12
    assert bm.allocate(5, toks, max_cached_tokens=3) == 0
    assert table(bm, 5) == []
    assert bm.allocate(6, toks, max_cached_tokens=0) == 0
    assert bm.allocate(7, toks, extra_key=0, max_cached_tokens=4) == 4
    check_tables_vs_refcounts(bm, [1, 2, 3, 4, 5, 6, 7])


def test_match_prefix_has_no_side_effects():
    bm = BlockManager(8, 2)
    prefill(bm, 1, A)
    bm.free(1)
    before = state(bm)
    for _ in range(3):
        assert bm.match_prefix(A) == 4
        assert bm.match_prefix(A + [9]) == 4
        assert bm.match_prefix([1, 2]) == 2
        assert bm.match_prefix([1]) == 0
        assert bm.match_prefix(B) == 0
    assert state(bm) == before


def test_extra_key_separates_caches():
    bm = BlockManager(16, 4)
    toks = list(range(8))
    prefill(bm, 1, toks, extra_key=5)
    assert bm.match_prefix(toks, extra_key=5) == 8
    assert bm.match_prefix(toks, extra_key=0) == 0
    assert bm.match_prefix(toks) == 0
    assert bm.allocate(2, toks, extra_key=6) == 0
    assert table(bm, 2) == []
    assert bm.allocate(3, toks, extra_key=5) == 8
    assert table(bm, 3) == table(bm, 1)


def test_partial_last_block_is_never_cached():
    bm = BlockManager(16, 4)
    toks = list(range(10))
    prefill(bm, 1, toks)
    assert bm.match_prefix(toks) == 8
    assert bm.match_prefix(toks[:9]) == 8
    bm.free(1)
    assert bm.num_evictable_blocks == 2
    assert bm.num_free_blocks == 16


def test_cache_full_blocks_respects_num_computed_tokens():
    bm = BlockManager(16, 4)
    toks = list(range(12))
    bm.allocate(1, toks)
    bm.append_slots(1, 12)
    bm.cache_full_blocks(1, toks, 7)  # only the first block is fully computed
    assert bm.match_prefix(toks) == 4
    bm.cache_full_blocks(1, toks, 12)
    assert bm.match_prefix(toks) == 12
    bm.cache_full_blocks(1, toks, 12)  # idempotent
    assert bm.match_prefix(toks) == 12
    bm.check_invariants()


def test_chain_property_prefix_matters():
    bm = BlockManager(16, 2)
    prefill(bm, 1, [1, 2, 3, 4, 5, 6])
    # same second block [3, 4] after a different first block: no hit
    assert bm.match_prefix([9, 9, 3, 4, 5, 6]) == 0
    # a cached first block followed by different content: only the first block
    assert bm.match_prefix([1, 2, 9, 9, 5, 6]) == 2
    assert bm.match_prefix([1, 2, 3, 4, 9, 9]) == 4
    assert bm.allocate(2, [9, 9, 3, 4]) == 0
    assert bm.allocate(3, [1, 2, 9, 9, 5, 6]) == 2
    assert table(bm, 3) == table(bm, 1)[:1]


def test_different_tokens_same_length_do_not_hit():
    bm = BlockManager(16, 4)
    prefill(bm, 1, [1, 2, 3, 4])
    for other in ([1, 2, 3, 5], [0, 2, 3, 4], [4, 3, 2, 1], [1, 2, 3, 4 + 2**20]):
        assert bm.match_prefix(other) == 0, other


def test_duplicate_block_keeps_existing_cached():
    bm = BlockManager(16, 4)
    toks = list(range(8))
    assert bm.allocate(1, toks) == 0
    assert bm.allocate(2, toks) == 0  # nothing cached yet: computed twice
    bm.append_slots(1, 8)
    bm.append_slots(2, 8)
    t1, t2 = table(bm, 1), table(bm, 2)
    assert set(t1).isdisjoint(t2)
    bm.cache_full_blocks(1, toks, 8)
    bm.cache_full_blocks(2, toks, 8)
    assert bm.allocate(3, toks) == 8
    assert table(bm, 3) == t1, "the block cached first must stay the cached one"
    assert [bm.ref_count(b) for b in t1] == [2, 2]
    assert [bm.ref_count(b) for b in t2] == [1, 1]
    check_tables_vs_refcounts(bm, [1, 2, 3])
    bm.free(2)
    bm.free(1)
    bm.free(3)
    assert bm.num_used_blocks == 0 and bm.num_free_blocks == 16
    assert bm.match_prefix(toks) == 8
    assert bm.allocate(4, toks) == 8
    assert table(bm, 4) == t1
    bm.check_invariants()


def test_prefix_caching_disabled():
    bm = BlockManager(8, 4, enable_prefix_caching=False)
    toks = list(range(10))
    assert prefill(bm, 1, toks) == 0
    assert bm.match_prefix(toks) == 0
    assert bm.allocate(2, toks) == 0
    assert table(bm, 2) == []
    assert bm.stats["hits"] == 0
    bm.free(1)
    bm.free(2)
    assert bm.num_evictable_blocks == 0
    assert bm.num_free_blocks == 8 and bm.num_used_blocks == 0
    bm.check_invariants()


# --------------------------------------------------------------------------
# fork / copy-on-write
# --------------------------------------------------------------------------


def test_fork_shares_blocks_and_cow_on_partial_last_block():
    bm = BlockManager(8, 4)
    toks = list(range(6))
    bm.allocate(1, toks)
    bm.append_slots(1, 6)  # block 0 full, block 1 holds 2 of 4 slots
    t1 = table(bm, 1)
    bm.fork(1, 2)
    assert bm.has_sequence(2)
    assert table(bm, 2) == t1
    assert [bm.ref_count(b) for b in t1] == [2, 2]
    assert bm.num_used_blocks == 2
    free_before = bm.num_free_blocks

    assert bm.can_append(2, 7)
    copies = copies_of(bm.append_slots(2, 7))  # writes slot 6 into shared block 1
    assert len(copies) == 1, f"expected one copy-on-write pair, got {copies}"
    src, dst = copies[0]
    assert src == t1[1]
    assert dst not in t1
    assert table(bm, 2) == [t1[0], dst]
    assert table(bm, 1) == t1, "the parent's table must not change"
    assert bm.ref_count(t1[0]) == 2
    assert bm.ref_count(t1[1]) == 1
    assert bm.ref_count(dst) == 1
    assert bm.num_free_blocks == free_before - 1
    check_tables_vs_refcounts(bm, [1, 2])

    # the parent now owns block 1 alone: no copy
    assert copies_of(bm.append_slots(1, 7)) == []
    assert table(bm, 1) == t1
    # the child keeps writing its own block: no copy
    assert copies_of(bm.append_slots(2, 8)) == []
    assert table(bm, 2) == [t1[0], dst]
    check_tables_vs_refcounts(bm, [1, 2])

    bm.free(1)
    assert bm.ref_count(t1[0]) == 1 and bm.ref_count(t1[1]) == 0
    bm.free(2)
    assert bm.num_used_blocks == 0 and bm.num_free_blocks == 8
    bm.check_invariants()


def test_fork_append_into_new_block_needs_no_copy():
    bm = BlockManager(8, 4)
    toks = list(range(8))
    bm.allocate(1, toks)
    bm.append_slots(1, 8)  # two full blocks
    t1 = table(bm, 1)
    bm.fork(1, 2)
    assert copies_of(bm.append_slots(2, 9)) == []
    t2 = table(bm, 2)
    assert t2[:2] == t1 and len(t2) == 3 and t2[2] not in t1
    assert [bm.ref_count(b) for b in t1] == [2, 2]
    assert copies_of(bm.append_slots(1, 9)) == []
    t1b = table(bm, 1)
    assert t1b[:2] == t1 and t1b[2] != t2[2]
    check_tables_vs_refcounts(bm, [1, 2])


def test_cow_without_free_block_raises_and_changes_nothing():
    bm = BlockManager(2, 4)
    bm.allocate(1, list(range(6)))
    bm.append_slots(1, 6)  # uses the whole pool, last block partial
    bm.fork(1, 2)
    before = state(bm, [1, 2])
    assert not bm.can_append(2, 7), "copy-on-write needs a free block and there is none"
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots(2, 7)
    assert state(bm, [1, 2]) == before
    bm.check_invariants()
    # once the parent is gone the block is no longer shared: no copy needed
    bm.free(1)
    assert bm.can_append(2, 7)
    assert copies_of(bm.append_slots(2, 8)) == []
    check_tables_vs_refcounts(bm, [2])


def test_fork_of_cached_prefix_then_free_both():
    bm = BlockManager(8, 2)
    prefill(bm, 1, A)
    bm.fork(1, 2)
    t = table(bm, 1)
    assert [bm.ref_count(b) for b in t] == [2, 2]
    bm.free(1)
    assert bm.num_evictable_blocks == 0
    bm.free(2)
    assert bm.num_evictable_blocks == 2
    assert bm.match_prefix(A) == 4
    bm.check_invariants()


# --------------------------------------------------------------------------
# eviction
# --------------------------------------------------------------------------


def _two_cached_then_freed():
    """Pool of 4 blocks of 2; A's and B's blocks end up evictable, A freed first."""
    bm = BlockManager(4, 2)
    prefill(bm, 1, A)
    a = table(bm, 1)
    bm.free(1)
    assert bm.num_evictable_blocks == 2 and bm.num_free_blocks == 4 and bm.num_used_blocks == 0
    prefill(bm, 2, B)
    b = table(bm, 2)
    assert set(a).isdisjoint(b), "never-hashed free blocks must be used before evicting cached ones"
    assert bm.stats["evictions"] == 0
    assert bm.match_prefix(A) == 4
    bm.free(2)
    assert bm.num_evictable_blocks == 4 and bm.num_free_blocks == 4
    return bm, a, b


def test_eviction_lru_order_and_tail_first():
    bm, a, b = _two_cached_then_freed()
    # LRU order now: a[1], a[0], b[1], b[0] (A freed first; each sequence tail first)
    bm.allocate(3, [9, 9])
    bm.append_slots(3, 2)
    assert table(bm, 3) == [a[1]], f"expected A's last block {a[1]} evicted first, got {table(bm, 3)}"
    assert bm.stats["evictions"] == 1
    assert bm.match_prefix(A) == 2, "A's first block is still cached"
    assert bm.match_prefix(B) == 4

    bm.append_slots(3, 4)
    assert table(bm, 3) == [a[1], a[0]]
    assert bm.stats["evictions"] == 2
    assert bm.match_prefix(A) == 0
    assert bm.match_prefix(B) == 4

    bm.append_slots(3, 6)
    assert table(bm, 3)[2] == b[1]
    assert bm.stats["evictions"] == 3
    assert bm.match_prefix(B) == 2
    assert bm.num_evictable_blocks == 1
    check_tables_vs_refcounts(bm, [3])


def test_hit_on_evictable_block_revives_it():
    bm, a, b = _two_cached_then_freed()
    cached = bm.allocate(3, A + [99])
    assert cached == 4
    assert table(bm, 3) == a
    assert [bm.ref_count(x) for x in a] == [1, 1]
    assert bm.num_evictable_blocks == 2, "revived blocks are no longer evictable"
    assert bm.num_used_blocks == 2 and bm.num_free_blocks == 2
    assert bm.stats["evictions"] == 0
    bm.append_slots(3, 5)
    t = table(bm, 3)
    assert t[:2] == a
    assert t[2] == b[1], f"must evict B's tail {b[1]} (oldest evictable), got {t[2]}"
    assert bm.stats["evictions"] == 1
    assert bm.match_prefix(A) == 4
    assert bm.match_prefix(B) == 2
    check_tables_vs_refcounts(bm, [3])


def test_refreeing_a_revived_block_makes_it_most_recent():
    bm, a, b = _two_cached_then_freed()
    assert bm.allocate(3, A) == 4  # revive a[0], a[1]
    bm.free(3)  # LRU order now b[1], b[0], a[1], a[0]
    assert bm.num_evictable_blocks == 4
    bm.allocate(4, [9, 9])
    bm.append_slots(4, 2)
    assert table(bm, 4) == [b[1]]
    assert bm.match_prefix(A) == 4
    assert bm.match_prefix(B) == 2


def test_counters_hits_misses():
    bm = BlockManager(16, 4)
    T = list(range(10))
    assert bm.allocate(1, T) == 0
    assert (bm.stats["hits"], bm.stats["misses"]) == (0, 2)
    bm.append_slots(1, 10)
    bm.cache_full_blocks(1, T, 10)
    assert bm.allocate(2, T) == 8
    assert (bm.stats["hits"], bm.stats["misses"]) == (2, 2)
    assert bm.allocate(3, T, max_cached_tokens=5) == 4  # one eligible full block
    assert (bm.stats["hits"], bm.stats["misses"]) == (3, 2)
    assert bm.allocate(4, T[:4] + [0] * 6) == 4  # 1 hit then 1 miss
    assert (bm.stats["hits"], bm.stats["misses"]) == (4, 3)
    assert bm.allocate(5, [7, 7, 7]) == 0  # no full block: neither
    assert (bm.stats["hits"], bm.stats["misses"]) == (4, 3)
    assert bm.allocate(6, [50] * 8 + T[:4]) == 0  # 3 full blocks, all after the (empty) cached prefix
    assert (bm.stats["hits"], bm.stats["misses"]) == (4, 6)
    # match_prefix does not count
    bm.match_prefix(T)
    assert (bm.stats["hits"], bm.stats["misses"]) == (4, 6)
    assert bm.stats["evictions"] == 0


def test_no_free_blocks_error_leaves_state_unchanged():
    bm = BlockManager(4, 2)
    prefill(bm, 1, A)
    bm.free(1)  # 2 evictable blocks
    bm.allocate(2, [5])
    bm.append_slots(2, 3)  # takes the 2 never-hashed blocks
    assert bm.num_free_blocks == 2 and bm.num_evictable_blocks == 2
    before = state(bm, [2])
    assert not bm.can_append(2, 9)  # 5 blocks > pool
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots(2, 9)
    assert state(bm, [2]) == before
    assert bm.match_prefix(A) == 4, "a failed append must not evict anything"
    bm.check_invariants()


def test_can_append_exact_boundary():
    bm = BlockManager(4, 2)
    prefill(bm, 1, A)
    bm.free(1)
    bm.allocate(2, [5])
    bm.append_slots(2, 3)  # 2 blocks
    assert bm.can_append(2, 8)  # 4 blocks: needs both evictable ones
    assert not bm.can_append(2, 9)
    assert copies_of(bm.append_slots(2, 8)) == []
    assert len(table(bm, 2)) == 4
    assert bm.stats["evictions"] == 2
    assert bm.num_free_blocks == 0 and bm.num_evictable_blocks == 0
    assert bm.match_prefix(A) == 0
    assert not bm.can_append(2, 9)
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots(2, 9)
    check_tables_vs_refcounts(bm, [2])


# --------------------------------------------------------------------------
# property test: random operation sequences against a reference model
# --------------------------------------------------------------------------

class BlockManagerDriver:
    """Random allocate / compute (append_slots + cache_full_blocks) / fork / free.

    Hypothesis picks the pool shape and a seed; the operations come from a
    seeded RNG (uniform choices keep prefix hits, copy-on-write, exhaustion
    and eviction frequent; every op is recorded with ``note`` for replay).
    Small pools and a 4-token vocabulary with shared prompt prefixes. Every
    observable is compared with ``BMModel`` (ref counts, tables, evictable
    LRU order, counters, match_prefix) and with a shadow of the KV content of
    each slot (what was written there, as (extra_key, prefix)).
    """

    def __init__(self, nb, bs, caching, hash_seed, rng_seed):
        self.bm = BlockManager(nb, bs, enable_prefix_caching=caching, hash_seed=hash_seed)
        self.m = BMModel(nb, bs, caching)
        self.rng = random.Random(rng_seed)
        self.seqs: dict[int, BMSeq] = {}
        self.history: list[tuple[list[int], int]] = []
        self.shadow: dict[int, tuple[int, int]] = {}
        self.pids = PrefixIds()
        self.next_id = 0
        self.max_len = max(4, min(nb * bs, 40))
        self.events: set[str] = set()

    # -- helpers -----------------------------------------------------------
    def snapshot(self):
        return state(self.bm, sorted(self.seqs)) + (
            tuple(self.bm.match_prefix(t, k) for t, k in self.history[-8:]),
        )

    def rand_tokens(self, min_size=1) -> list[int]:
        r = self.rng
        if self.history and r.random() < 0.7:
            base, _ = r.choice(self.history)
            cut = len(base) if r.random() < 0.4 else r.randint(0, len(base))
            toks = base[:cut] + [r.randrange(4) for _ in range(r.randint(0, self.m.block_size + 2))]
        else:
            toks = [r.randrange(4) for _ in range(r.randint(min_size, self.max_len))]
        return (toks + [0] * min_size)[: max(len(toks), min_size)]

    def do_allocate(self) -> int:
        bm, m, r = self.bm, self.m, self.rng
        toks = self.rand_tokens()
        key = 1 if r.random() < 0.25 else 0
        limit = -1 if r.random() < 0.5 else r.randint(0, len(toks))
        sid = self.next_id
        self.next_id += 1
        note(f"allocate({sid}, {toks}, extra_key={key}, max_cached_tokens={limit})")
        expect_all = m.predict_match(toks, key)
        assert bm.match_prefix(toks, key) == len(expect_all) * m.block_size, "match_prefix != model"
        cached = bm.allocate(sid, toks, key, limit)
        hits = m.allocate(sid, toks, key, limit)
        assert cached == len(hits) * m.block_size, f"allocate returned {cached}, model expects {len(hits) * m.block_size}"
        assert table(bm, sid) == hits, f"allocate table {table(bm, sid)} != cached blocks {hits}"
        if hits:
            self.events.add("allocate hit")
        if len(hits) < len(expect_all):
            self.events.add("hit cut by max_cached_tokens")
        self.seqs[sid] = BMSeq(list(toks), key, slots=cached)
        self.history.append((list(toks), key))
        return sid

    def do_compute(self, sid: int, new: int) -> bool:
        """append_slots(sid, new), write the KV, cache full blocks. False if no blocks."""
        bm, m = self.bm, self.m
        bs = m.block_size
        seq = self.seqs[sid]
        assert seq.slots < new <= len(seq.tokens)
        note(f"append_slots({sid}, {new}); cache_full_blocks({sid}, {seq.tokens}, {new})")
        old = list(m.tables[sid])
        need = cdiv(new, bs) - len(old)
        cow = seq.slots % bs != 0 and m.ref[old[-1]] > 1
        ok = need + cow <= m.num_blocks - m.used
        assert bm.can_append(sid, new) == ok, f"can_append({sid}, {new}) != {ok} (need {need} + cow {cow})"
        snap = self.snapshot()
        try:
            copies = copies_of(bm.append_slots(sid, new))
        except NoFreeBlocksError:
            assert not ok, "append_slots raised NoFreeBlocksError although enough blocks were free"
            assert self.snapshot() == snap, "failed append_slots changed state"
            self.events.add("NoFreeBlocksError")
            return False
        assert ok, "append_slots succeeded although there were not enough blocks"
        newt = table(bm, sid)
        assert len(newt) == cdiv(new, bs)
        if cow:
            assert len(copies) == 1, f"expected one CoW copy, got {copies}"
            assert copies[0] == (old[-1], newt[len(old) - 1]), f"copy {copies[0]} vs table {old} -> {newt}"
            assert newt[: len(old) - 1] == old[:-1]
            fresh = newt[len(old) - 1 :]
        else:
            assert copies == [], f"unexpected copies {copies}"
            assert newt[: len(old)] == old
            fresh = newt[len(old) :]
        evicted_before = m.evictions
        m.take_blocks(fresh)
        if m.evictions > evicted_before:
            self.events.add("eviction")
            if m.evictions - evicted_before > 1:
                self.events.add("several evictions at once")
        if cow:
            self.events.add("copy-on-write")
            m.release(old[-1])
        m.tables[sid] = newt
        for src, dst in copies:
            for o in range(bs):
                v = self.shadow.get(src * bs + o)
                if v is None:
                    self.shadow.pop(dst * bs + o, None)
                else:
                    self.shadow[dst * bs + o] = v
        ids = self.pids.ids(seq.tokens)
        for p in range(seq.slots, new):
            self.shadow[newt[p // bs] * bs + p % bs] = (seq.key, ids[p])
        seq.slots = new
        bm.cache_full_blocks(sid, seq.tokens, new)
        m.cache_full_blocks(sid, seq.tokens, seq.key, new)
        return True

    def do_free(self, sid: int):
        note(f"free({sid})")
        self.bm.free(sid)
        self.m.free(sid)
        del self.seqs[sid]
        assert not self.bm.has_sequence(sid)

    # -- operations --------------------------------------------------------
    def op_allocate(self):
        self.do_allocate()

    def op_request_lifetimes(self):
        """A burst of requests: allocate, compute everything (in 1-3 chunks), usually free."""
        r = self.rng
        for _ in range(r.randint(1, 6)):
            sid = self.do_allocate()
            seq = self.seqs[sid]
            for _ in range(r.randint(1, 3)):
                if seq.slots >= len(seq.tokens):
                    break
                new = len(seq.tokens) if r.random() < 0.5 else r.randint(seq.slots + 1, len(seq.tokens))
                if not self.do_compute(sid, new):
                    break
            if r.random() < 0.75:
                self.do_free(sid)

    def op_compute(self):
        r = self.rng
        sid = r.choice(sorted(self.seqs))
        seq = self.seqs[sid]
        if seq.slots == len(seq.tokens) or r.random() < 0.5:
            seq.tokens += [r.randrange(4) for _ in range(r.randint(1, 8))]
        rem = len(seq.tokens) - seq.slots
        n = rem if r.random() < 0.5 else r.randint(1, rem)
        self.do_compute(sid, seq.slots + n)

    def op_free(self):
        self.do_free(self.rng.choice(sorted(self.seqs)))

    def op_fork(self):
        r = self.rng
        pid = r.choice(sorted(self.seqs))
        parent = self.seqs[pid]
        cid = self.next_id
        self.next_id += 1
        note(f"fork({pid}, {cid})")
        self.bm.fork(pid, cid)
        self.m.fork(pid, cid)
        tail = [r.randrange(4) for _ in range(r.randint(0, 6))]
        self.seqs[cid] = BMSeq(parent.tokens[: parent.slots] + tail, parent.key, slots=parent.slots)
        assert table(self.bm, cid) == table(self.bm, pid)
        # the forked child (or the parent) usually writes next: exercise copy-on-write
        if tail and r.random() < 0.7:
            self.do_compute(cid, len(self.seqs[cid].tokens))
        elif parent.slots < len(parent.tokens) and r.random() < 0.7:
            self.do_compute(pid, len(parent.tokens))

    def op_probe(self):
        toks = self.rand_tokens(min_size=0)
        key = self.rng.randint(0, 1)
        snap = self.snapshot()
        assert self.bm.match_prefix(toks, key) == len(self.m.predict_match(toks, key)) * self.m.block_size, (
            f"match_prefix({toks}, {key}) != model"
        )
        assert self.snapshot() == snap, "match_prefix changed state"

    def op_free_unknown(self):
        with pytest.raises(KeyError):
            self.bm.free(10**9)

    def random_op(self):
        ops = [self.op_allocate, self.op_request_lifetimes, self.op_request_lifetimes, self.op_probe, self.op_free_unknown]
        if self.seqs:
            ops += [self.op_compute, self.op_compute, self.op_compute, self.op_free, self.op_free, self.op_fork]
        self.rng.choice(ops)()

    # -- invariants --------------------------------------------------------
    def consistent(self):
        bm, m = self.bm, self.m
        bs = m.block_size
        tables = check_tables_vs_refcounts(bm, sorted(self.seqs))
        assert tables == m.tables
        for b in range(m.num_blocks):
            assert bm.ref_count(b) == m.ref[b]
        assert bm.num_evictable_blocks == len(m.lru), f"evictable {bm.num_evictable_blocks} != model {len(m.lru)}"
        stats = bm.stats
        assert stats["evictions"] == m.evictions, f"evictions {stats['evictions']} != {m.evictions}"
        if m.caching:
            assert (stats["hits"], stats["misses"]) == (m.hits, m.misses), (
                f"hits/misses {(stats['hits'], stats['misses'])} != {(m.hits, m.misses)}"
            )
        for sid, seq in self.seqs.items():
            t = tables[sid]
            assert len(t) == cdiv(seq.slots, bs)
            ids = self.pids.ids(seq.tokens[: seq.slots])
            for p in range(seq.slots):
                got = self.shadow.get(t[p // bs] * bs + p % bs)
                assert got == (seq.key, ids[p]), (
                    f"seq {sid} position {p}: block {t[p // bs]} holds KV of a different prefix"
                )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(
    nb=st.one_of(st.integers(2, 8), st.integers(2, 24)),
    bs=st.sampled_from([1, 2, 4, 16]),
    caching=st.sampled_from([True, True, True, False]),
    hash_seed=st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    rng_seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(10, 60),
)
def test_block_manager_random_ops(nb, bs, caching, hash_seed, rng_seed, n_ops):
    d = BlockManagerDriver(nb, bs, caching, hash_seed, rng_seed)
    for _ in range(n_ops):
        d.random_op()
        d.consistent()
    for sid in sorted(d.seqs):
        d.do_free(sid)
        d.consistent()
    assert d.bm.num_used_blocks == 0 and d.bm.num_free_blocks == d.bm.num_blocks
    for e in sorted(d.events):
        event(e)
