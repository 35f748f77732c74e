"""Pure-Python helpers for checking tinyfast.core against its specification.

Nothing here imports the implementation's internals: these are independent
models (written from the spec) that the tests compare the native code against.

* ``PrefixIds`` gives every distinct (token-prefix) a small integer, so the
  "KV content" of a slot can be modelled cheaply as (extra_key, prefix id):
  the KV written at position p of a sequence depends on its extra key and on
  all of its tokens 0..p.
* ``check_output_layout`` validates the internal consistency of one
  ``SchedulerOutput`` (shapes, dtypes, cumulative offsets, slot mapping...).
* ``BMModel`` is a reference model of the block manager's bookkeeping (ref
  counts, prefix-cache registry, LRU order of evictable blocks, counters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class PrefixIds:
    """Interns token prefixes: ids(tokens)[p] identifies tokens[:p+1]."""

    def __init__(self) -> None:
        self._trie: dict[tuple[int, int], int] = {}

    def ids(self, tokens) -> list[int]:
        out = []
        node = 0
        trie = self._trie
        for t in tokens:
            key = (node, int(t))
            nxt = trie.get(key)
            if nxt is None:
                nxt = len(trie) + 1
                trie[key] = nxt
            node = nxt
            out.append(node)
        return out


# --------------------------------------------------------------------------
# SchedulerOutput layout
# --------------------------------------------------------------------------

_OUT_DTYPES = {
    "seq_ids": np.int64,
    "num_scheduled_tokens": np.int32,
    "num_computed_tokens": np.int32,
    "context_lens": np.int32,
    "query_start_loc": np.int32,
    "token_ids": np.int32,
    "positions": np.int32,
    "slot_mapping": np.int32,
    "block_tables": np.int32,
    "logits_indices": np.int32,
    "sample_seq_ids": np.int64,
    "block_copies": np.int32,
    "preempted_seq_ids": np.int64,
}


def row_blocks(row: np.ndarray) -> np.ndarray:
    """The valid (non -1) prefix of a padded block-table row."""
    row = np.asarray(row)
    neg = np.nonzero(row < 0)[0]
    if neg.size == 0:
        return row
    first = int(neg[0])
    assert np.all(row[first:] == -1), f"block table row padding is not a -1 suffix: {row.tolist()}"
    return row[:first]


def check_output_layout(out, block_size: int, num_blocks: int) -> None:
    """Checks everything about one SchedulerOutput that follows from the output alone."""
    for name, dt in _OUT_DTYPES.items():
        arr = getattr(out, name)
        assert isinstance(arr, np.ndarray), f"out.{name} is {type(arr).__name__}, expected numpy.ndarray"
        assert arr.dtype == dt, f"out.{name}.dtype is {arr.dtype}, expected {np.dtype(dt)}"

    S = int(out.num_seqs)
    T = int(out.num_tokens)
    for name in ("seq_ids", "num_scheduled_tokens", "num_computed_tokens", "context_lens"):
        assert getattr(out, name).shape == (S,), f"out.{name}.shape {getattr(out, name).shape} != ({S},)"
    assert out.query_start_loc.shape == (S + 1,), f"query_start_loc.shape {out.query_start_loc.shape} != ({S + 1},)"
    for name in ("token_ids", "positions", "slot_mapping"):
        assert getattr(out, name).shape == (T,), f"out.{name}.shape {getattr(out, name).shape} != ({T},)"
    assert out.block_tables.ndim == 2 and out.block_tables.shape[0] == S, f"block_tables.shape {out.block_tables.shape}"
    K = out.logits_indices.shape[0]
    assert out.logits_indices.ndim == 1 and out.sample_seq_ids.shape == (K,)
    assert out.block_copies.ndim == 2 and out.block_copies.shape[1] == 2, f"block_copies.shape {out.block_copies.shape}"
    assert out.preempted_seq_ids.ndim == 1

    seq_ids = out.seq_ids.tolist()
    assert len(set(seq_ids)) == S, f"duplicate seq ids in one step: {seq_ids}"
    qsl = out.query_start_loc
    assert int(qsl[0]) == 0, "query_start_loc[0] != 0"
    assert int(qsl[-1]) == T, f"query_start_loc[-1]={int(qsl[-1])} != num_tokens={T}"
    assert np.array_equal(np.diff(qsl), out.num_scheduled_tokens), "query_start_loc is not the cumsum of num_scheduled_tokens"
    assert np.all(out.num_scheduled_tokens > 0), f"a scheduled sequence got no tokens: {out.num_scheduled_tokens.tolist()}"
    assert np.all(out.num_computed_tokens >= 0)
    assert np.array_equal(out.context_lens, out.num_computed_tokens + out.num_scheduled_tokens), (
        "context_lens != num_computed_tokens + num_scheduled_tokens"
    )

    for i in range(S):
        lo, hi = int(qsl[i]), int(qsl[i + 1])
        c0, ctx = int(out.num_computed_tokens[i]), int(out.context_lens[i])
        assert np.array_equal(out.positions[lo:hi], np.arange(c0, ctx)), (
            f"seq {seq_ids[i]}: positions {out.positions[lo:hi].tolist()} != range({c0}, {ctx})"
        )
        blocks = row_blocks(out.block_tables[i])
        assert len(blocks) >= cdiv(ctx, block_size), (
            f"seq {seq_ids[i]}: block table has {len(blocks)} blocks, context_len {ctx} needs {cdiv(ctx, block_size)}"
        )
        assert np.all((blocks >= 0) & (blocks < num_blocks)), f"seq {seq_ids[i]}: block ids out of range {blocks.tolist()}"
        assert len(set(blocks.tolist())) == len(blocks), f"seq {seq_ids[i]}: repeated block in table {blocks.tolist()}"
        pos = out.positions[lo:hi].astype(np.int64)
        expect = blocks[pos // block_size].astype(np.int64) * block_size + pos % block_size
        assert np.array_equal(out.slot_mapping[lo:hi], expect), (
            f"seq {seq_ids[i]}: slot_mapping {out.slot_mapping[lo:hi].tolist()} != table-derived {expect.tolist()}"
        )

    slots = out.slot_mapping.tolist()
    assert len(set(slots)) == len(slots), f"two tokens of one step write the same KV slot: {slots}"
    assert all(0 <= s < num_blocks * block_size for s in slots)

    # logits_indices: last token of every sequence whose context covers all its
    # known tokens; the order of sample_seq_ids follows logits_indices.
    for k in range(K):
        idx = int(out.logits_indices[k])
        assert 0 <= idx < T, f"logits index {idx} out of range [0, {T})"
        i = int(np.searchsorted(qsl, idx, side="right")) - 1
        assert int(qsl[i + 1]) - 1 == idx, f"logits index {idx} is not the last token of sequence slot {i}"
        assert int(out.sample_seq_ids[k]) == seq_ids[i], (
            f"sample_seq_ids[{k}]={int(out.sample_seq_ids[k])} but logits index {idx} belongs to seq {seq_ids[i]}"
        )
    assert len(set(out.sample_seq_ids.tolist())) == K
    assert np.all(np.diff(out.logits_indices) > 0) if K > 1 else True

    for src, dst in out.block_copies.tolist():
        assert 0 <= src < num_blocks and 0 <= dst < num_blocks and src != dst, f"bad block copy {(src, dst)}"


# --------------------------------------------------------------------------
# Block manager checks
# --------------------------------------------------------------------------


def check_tables_vs_refcounts(bm, live_seq_ids) -> dict[int, list[int]]:
    """Ref counts / used set / accounting against the live sequences' tables."""
    n = bm.num_blocks
    counts = [0] * n
    tables = {}
    for sid in live_seq_ids:
        assert bm.has_sequence(sid), f"live sequence {sid} unknown to the block manager"
        t = bm.block_table(sid)
        assert isinstance(t, np.ndarray) and t.dtype == np.int32, f"block_table dtype {getattr(t, 'dtype', type(t))}"
        t = t.tolist()
        assert len(set(t)) == len(t), f"seq {sid}: a block appears twice in its table {t}"
        for b in t:
            assert 0 <= b < n, f"seq {sid}: block id {b} out of range"
            counts[b] += 1
        tables[sid] = t
    used = 0
    for b in range(n):
        rc = bm.ref_count(b)
        assert rc == counts[b], f"ref_count({b})={rc} but {counts[b]} live tables hold it"
        used += rc > 0
    assert bm.num_used_blocks == used, f"num_used_blocks={bm.num_used_blocks}, blocks in live tables={used}"
    assert bm.num_used_blocks + bm.num_free_blocks == n, (
        f"used {bm.num_used_blocks} + free {bm.num_free_blocks} != num_blocks {n} (leak or double free)"
    )
    assert 0 <= bm.num_evictable_blocks <= bm.num_free_blocks
    assert abs(bm.usage - used / n) < 1e-9, f"usage {bm.usage} != {used}/{n}"
    bm.check_invariants()
    return tables


@dataclass
class BMSeq:
    tokens: list[int]
    key: int
    slots: int = 0  # token slots the table covers == tokens whose KV is written


@dataclass
class BMModel:
    """Reference bookkeeping for BlockManager (block ids are taken from the real one).

    Prefix-cache identity of a block = (extra_key, tokens[: end of the block]).
    Only the first block registered under a key is in the cache; a later
    identical block is not registered (the existing one stays cached) and is
    therefore treated as never-hashed. Each block of a sequence is offered to
    the cache once, when cache_full_blocks first finds it fully computed (a
    per-sequence cursor; blocks obtained as prefix hits count as offered), so a
    block that lost to an identical cached one is not registered later even if
    that one gets evicted meanwhile.
    """

    num_blocks: int
    block_size: int
    caching: bool
    ref: list[int] = field(default_factory=list)
    registry: dict[tuple, int] = field(default_factory=dict)  # key -> block
    block_key: dict[int, tuple] = field(default_factory=dict)  # block -> key
    lru: list[int] = field(default_factory=list)  # evictable, least recently freed first
    tables: dict[int, list[int]] = field(default_factory=dict)
    cursor: dict[int, int] = field(default_factory=dict)  # leading blocks already offered to the cache
    hits: int = 0
    misses: int = 0
    evictions: int = 0

    def __post_init__(self):
        self.ref = [0] * self.num_blocks

    # keys -------------------------------------------------------------
    def block_keys(self, tokens, key, n_blocks):
        bs = self.block_size
        return [(key, tuple(tokens[: (i + 1) * bs])) for i in range(n_blocks)]

    def predict_match(self, tokens, key, limit=None) -> list[int]:
        """Blocks a lookup must return (longest cached chain within tokens[:limit])."""
        if not self.caching:
            return []
        eff = len(tokens) if limit is None or limit < 0 else min(limit, len(tokens))
        out = []
        for k in self.block_keys(tokens, key, eff // self.block_size):
            b = self.registry.get(k)
            if b is None:
                break
            out.append(b)
        return out

    @property
    def used(self) -> int:
        return sum(1 for r in self.ref if r > 0)

    @property
    def never_hashed_free(self) -> int:
        return self.num_blocks - self.used - len(self.lru)

    # operations (mirror calls made on the real manager) -----------------
    def allocate(self, sid, tokens, key, limit):
        hits = self.predict_match(tokens, key, limit)
        eff = len(tokens) if limit < 0 else min(limit, len(tokens))
        if self.caching:
            self.hits += len(hits)
            self.misses += eff // self.block_size - len(hits)
        for b in hits:
            if self.ref[b] == 0:
                self.lru.remove(b)
            self.ref[b] += 1
        self.tables[sid] = list(hits)
        self.cursor[sid] = len(hits)
        return hits

    def take_blocks(self, new_blocks: list[int]) -> None:
        """Blocks newly given to a table by append_slots, in any order.

        Never-hashed free blocks must be used first; then evictable blocks in
        LRU order (raises AssertionError when the real manager deviated)."""
        k = len(new_blocks)
        evict_n = max(0, k - self.never_hashed_free)
        expected_evicted = self.lru[:evict_n]
        for b in new_blocks:
            assert self.ref[b] == 0, f"append_slots handed out block {b} whose ref count is {self.ref[b]}"
        got_evicted = [b for b in new_blocks if b in self.lru]
        assert sorted(got_evicted) == sorted(expected_evicted), (
            f"evicted blocks {got_evicted}, expected the least-recently-freed {expected_evicted} "
            f"(never-hashed free before: {self.never_hashed_free}, LRU: {self.lru})"
        )
        for b in got_evicted:
            self.lru.remove(b)
            del self.registry[self.block_key.pop(b)]
        self.evictions += len(got_evicted)
        for b in new_blocks:
            self.ref[b] += 1

    def release(self, b: int) -> None:
        self.ref[b] -= 1
        assert self.ref[b] >= 0
        if self.ref[b] == 0 and b in self.block_key:
            self.lru.append(b)

    def cache_full_blocks(self, sid, tokens, key, num_computed):
        if not self.caching:
            return
        table = self.tables[sid]
        n = min(num_computed // self.block_size, len(table))
        start = self.cursor[sid]
        if n <= start:
            return
        self.cursor[sid] = n
        for i, k in enumerate(self.block_keys(tokens, key, n)):
            if i < start:
                continue
            b = table[i]
            if b in self.block_key:
                assert self.block_key[b] == k, "model error: a block changed content while registered"
                continue
            if k not in self.registry:
                self.registry[k] = b
                self.block_key[b] = k

    def free(self, sid):
        self.cursor.pop(sid)
        for b in reversed(self.tables.pop(sid)):
            self.release(b)

    def fork(self, parent, child):
        self.tables[child] = list(self.tables[parent])
        self.cursor[child] = self.cursor[parent]
        for b in self.tables[child]:
            self.ref[b] += 1
