"""Property tests: random add / step / update / finish / abort / preempt / fork sequences.

Hypothesis picks a configuration (small block pools, to force preemption and
prefix-cache eviction), a seed and a number of operations; a seeded RNG then
drives tinyfast.core.Scheduler (add / step / update / fork / abort / finish /
preempt; every call is recorded with ``note`` so a failure prints a replayable
trace). After every operation it checks that

* no block is leaked or double-freed and ref counts equal the number of live
  tables holding each block;
* every output is internally consistent (positions, slot mapping vs block
  tables, query_start_loc, logits indices) and within the step budgets;
* scheduling order / chunking / FCFS / preemption bookkeeping follow the spec;
* a shadow of the KV cache (what each slot was last written with, according to
  the outputs' slot_mapping) always holds, for every computed position of every
  running sequence, the KV of exactly that sequence's prefix: prefix-cache hits,
  copy-on-write after fork and eviction can never hand out wrong blocks;
* liveness: stepping (without new requests) finishes every request within a
  bounded number of steps, after which the pool is back to baseline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from tinyfast.core import CapacityError, Scheduler, SchedulerConfig

from .model import PrefixIds, cdiv, check_output_layout, check_tables_vs_refcounts, row_blocks

def L(a) -> list[int]:
    return np.asarray(a).tolist()


@dataclass
class Req:
    tokens: list[int]
    key: int
    target: int
    status: str = "waiting"
    computed: int = 0
    just_updated: bool = False  # got a sampled token since it was last scheduled


class SchedulerDriver:
    """Drives one Scheduler with random operations (seeded RNG) and checks it.

    Hypothesis picks the configuration, a seed and the number of operations;
    the operations themselves come from ``random.Random(seed)`` so that long,
    load-heavy traces (preemption, eviction, CoW) are the norm. Every
    operation is recorded with ``note`` for replay.
    """

    def __init__(self, bs, nb, mml, mns, mbt, caching, hash_seed, rng_seed):
        self.cfg = SchedulerConfig(
            num_blocks=nb, block_size=bs, max_num_seqs=mns, max_num_batched_tokens=mbt,
            max_model_len=mml, enable_prefix_caching=caching, hash_seed=hash_seed,
        )
        self.s = Scheduler(self.cfg)
        self.bm = self.s.block_manager
        self.bs, self.nb, self.mml, self.mns, self.mbt, self.caching = bs, nb, mml, mns, mbt, caching
        self.reqs: dict[int, Req] = {}
        self.waiting: list[int] = []
        self.pending: list[int] = []  # ids that must receive a token via update()
        self.shadow: dict[int, tuple[int, int]] = {}
        self.pids = PrefixIds()
        self.prompts: list[tuple[list[int], int]] = []
        self.next_id = 1
        self.rng = random.Random(rng_seed)
        self.step_preemptions = 0
        self.api_preemptions = 0
        self.events: set[str] = set()

    # --------------------------------------------------------------- helpers
    def live_pending(self) -> list[int]:
        return [i for i in self.pending if i in self.reqs]

    def running(self) -> list[int]:
        return sorted(i for i, r in self.reqs.items() if r.status == "running")

    def rand_prompt(self) -> list[int]:
        r = self.rng
        if self.prompts and r.random() < 0.6:
            base, _ = r.choice(self.prompts)
            cut = len(base) if r.random() < 0.4 else r.randint(0, len(base))
            toks = base[:cut] + [r.randrange(4) for _ in range(r.randint(0, max(1, self.mml // 2)))]
        else:
            toks = [r.randrange(4) for _ in range(r.randint(1, self.mml))]
        toks = toks[: self.mml]
        return toks or [0]

    def rand_target(self, n: int) -> int:
        return self.rng.randint(min(n + 1, self.mml), self.mml)

    def flush(self):
        """update() with random tokens for every sequence waiting for one."""
        if not self.pending:
            return
        ids, self.pending = self.pending, []
        toks = [self.rng.randrange(4) for _ in ids]
        note(f"update({ids}, {toks})")
        res = self.s.update(np.asarray(ids, dtype=np.int64), np.asarray(toks, dtype=np.int32))
        assert isinstance(res, np.ndarray) and res.dtype == np.int64
        res = res.tolist()
        alive = [i for i in ids if i in self.reqs]
        for i, t in zip(ids, toks):
            if i in self.reqs:
                self.reqs[i].tokens.append(t)
                self.reqs[i].just_updated = True
        auto = [i for i in alive if len(self.reqs[i].tokens) >= self.mml]
        assert sorted(res) == sorted(auto), (
            f"update() auto-finished {sorted(res)}, expected those reaching max_model_len={self.mml}: {sorted(auto)}"
        )
        for i in auto:
            del self.reqs[i]
            assert not self.bm.has_sequence(i), f"auto-finished seq {i} still holds blocks"
        for i in alive:
            if i in self.reqs and len(self.reqs[i].tokens) >= self.reqs[i].target:
                note(f"finish({i})")
                self.s.finish(i)
                del self.reqs[i]

    def do_step(self):
        s, bm, bs = self.s, self.bm, self.bs
        assert not self.live_pending()
        pre = {i: (r.status, r.computed, len(r.tokens), r.just_updated) for i, r in self.reqs.items()}
        old_waiting = list(self.waiting)
        running_before = self.running()
        had_work = s.has_unfinished()

        out = s.step()
        note(
            f"step() -> seq_ids={L(out.seq_ids)} computed={L(out.num_computed_tokens)} "
            f"scheduled={L(out.num_scheduled_tokens)} preempted={L(out.preempted_seq_ids)} "
            f"copies={out.block_copies.tolist()}"
        )
        check_output_layout(out, bs, self.nb)
        S, T = int(out.num_seqs), int(out.num_tokens)
        assert T <= self.mbt, f"num_tokens {T} > max_num_batched_tokens {self.mbt}"
        assert S <= self.mns, f"num_seqs {S} > max_num_seqs {self.mns}"
        if had_work:
            assert S >= 1, "step() scheduled nothing although requests are unfinished (no progress)"
        seq_ids = L(out.seq_ids)
        preempted = L(out.preempted_seq_ids)
        assert len(set(preempted)) == len(preempted)
        for p in preempted:
            assert p in self.reqs and pre[p][0] == "running", f"preempted seq {p} was not running"
            r = self.reqs[p]
            r.status, r.computed, r.just_updated = "waiting", 0, False
            assert not bm.has_sequence(p) or p in seq_ids, f"preempted seq {p} still holds blocks"
        self.step_preemptions += len(preempted)
        if preempted:
            self.events.add("step preempted")
        if out.block_copies.shape[0]:
            self.events.add("copy-on-write")

        qsl = out.query_start_loc
        cats = []
        ctxs = {}
        for i, sid in enumerate(seq_ids):
            assert sid in self.reqs, f"scheduled unknown/finished seq {sid}"
            r = self.reqs[sid]
            st0, comp0, n0, upd0 = pre[sid]
            c0, ns, ctx = int(out.num_computed_tokens[i]), int(out.num_scheduled_tokens[i]), int(out.context_lens[i])
            was_running = st0 == "running" and sid not in preempted
            if was_running:
                assert c0 == comp0, f"seq {sid}: num_computed_tokens {c0}, it had computed {comp0}"
                if comp0 == n0 - 1:
                    cats.append((0,) if upd0 else (0, 1))
                else:
                    cats.append((1,))
            else:
                assert c0 % bs == 0, f"seq {sid}: admitted with {c0} cached tokens, not a multiple of {bs}"
                assert c0 <= n0 - 1, f"seq {sid}: admitted with all {n0} tokens cached; at least one must be computed"
                if c0:
                    self.events.add("admitted with cache hit")
                if not self.caching:
                    assert c0 == 0, f"seq {sid}: cache hit of {c0} tokens with prefix caching disabled"
                cats.append((2,))
            assert ctx <= n0, f"seq {sid}: context_len {ctx} > known tokens {n0}"
            if ns < n0 - c0:
                # min(remaining, budget left) -- a running prefill may also be cut
                # at a block boundary ("up to its remaining tokens") when blocks run out
                # (tokens of sequences preempted later in the same step may or may
                # not be handed back to the budget: allow for that slack)
                slack = sum(pre[v][2] - pre[v][1] for v in preempted if pre[v][0] == "running")
                budget_cut = (i == S - 1 or slack > 0) and T + slack >= self.mbt
                block_cut = was_running and ctx % bs == 0
                assert budget_cut or block_cut, (
                    f"seq {sid} got {ns} of its {n0 - c0} remaining tokens although the budget was not exhausted "
                    f"(position {i}/{S}, {T}/{self.mbt} tokens, {'running' if was_running else 'admitted'})"
                )
                if not budget_cut:
                    self.events.add("running prefill cut by blocks")
            lo, hi = int(qsl[i]), int(qsl[i + 1])
            assert L(out.token_ids[lo:hi]) == r.tokens[c0:ctx], f"seq {sid}: token_ids are not its tokens[{c0}:{ctx}]"
            r.status, r.computed, r.just_updated = "running", ctx, False
            assert s.num_computed_tokens(sid) == ctx
            t = L(bm.block_table(sid))
            assert L(row_blocks(out.block_tables[i])) == t, f"seq {sid}: output block table != block manager table"
            assert len(t) == cdiv(ctx, bs), f"seq {sid}: table has {len(t)} blocks for context {ctx}"
            ctxs[sid] = ctx

        # order: decodes, then running prefills, then newly admitted (FCFS)
        cur = 0
        for sid, allowed in zip(seq_ids, cats):
            ok = [c for c in allowed if c >= cur]
            assert ok, f"scheduling order violated: {list(zip(seq_ids, cats))} (0=decode, 1=prefill, 2=admitted)"
            cur = min(ok)
        admitted = [sid for sid in seq_ids if pre[sid][0] == "waiting"]
        assert admitted == old_waiting[: len(admitted)], f"admission not FCFS: admitted {admitted}, waiting was {old_waiting}"
        if T < self.mbt and S < self.mns:
            skipped = [i for i in running_before if i not in seq_ids and i not in preempted]
            assert not skipped, f"running seqs {skipped} neither scheduled nor preempted although budget was left"

        # sampling
        expect_samples = [sid for sid in seq_ids if ctxs[sid] == len(self.reqs[sid].tokens)]
        assert L(out.sample_seq_ids) == expect_samples
        self.pending = expect_samples

        # waiting queue: preempted at the front, then the untouched old waiting
        waiting_now = L(s.waiting_ids())
        front = [p for p in preempted if p not in seq_ids]
        rest = [w for w in old_waiting if w not in seq_ids]
        assert sorted(waiting_now[: len(front)]) == sorted(front), f"waiting {waiting_now}: preempted {front} not at front"
        assert waiting_now[len(front):] == rest, f"waiting {waiting_now}, expected {front} + {rest}"
        self.waiting = waiting_now
        npre = s.num_preemptions
        assert npre in (self.step_preemptions, self.step_preemptions + self.api_preemptions), (
            f"num_preemptions {npre}, step preemptions {self.step_preemptions}, explicit {self.api_preemptions}"
        )

        # shadow KV cache: copies run before the forward pass, then KV writes
        for src, dst in out.block_copies.tolist():
            for o in range(bs):
                v = self.shadow.get(src * bs + o)
                if v is None:
                    self.shadow.pop(dst * bs + o, None)
                else:
                    self.shadow[dst * bs + o] = v
        for i, sid in enumerate(seq_ids):
            r = self.reqs[sid]
            ids = self.pids.ids(r.tokens[: ctxs[sid]])
            for j in range(int(qsl[i]), int(qsl[i + 1])):
                self.shadow[int(out.slot_mapping[j])] = (r.key, ids[int(out.positions[j])])
        for i, sid in enumerate(seq_ids):
            self.check_kv(sid, ctxs[sid], L(row_blocks(out.block_tables[i])), c0=int(out.num_computed_tokens[i]))

    def check_kv(self, sid, upto, blocks, c0=None):
        r = self.reqs[sid]
        bs = self.bs
        ids = self.pids.ids(r.tokens[:upto])
        for p in range(upto):
            got = self.shadow.get(blocks[p // bs] * bs + p % bs)
            if got != (r.key, ids[p]):
                where = "" if c0 is None else (" (cached/earlier position)" if p < c0 else " (written this step)")
                raise AssertionError(
                    f"seq {sid} position {p}{where}: block {blocks[p // bs]} does not hold the KV of this "
                    f"sequence's prefix (extra_key={r.key}, tokens={r.tokens[: p + 1]})"
                )

    def drain(self):
        n = len(self.reqs)
        bound = 200 + 2 * (n + 1) * sum(max(r.target, len(r.tokens)) for r in self.reqs.values())
        for _ in range(bound):
            self.flush()
            if not self.reqs:
                break
            self.do_step()
            self.consistent()
        else:  # pragma: no cover
            raise AssertionError(f"{len(self.reqs)} requests still unfinished after {bound} steps (livelock?)")
        self.flush()
        self.events.add(f"drained {n} requests" if n < 3 else "drained >=3 requests")
        assert not self.reqs
        assert not self.s.has_unfinished()
        assert self.s.num_waiting == 0 and self.s.num_running == 0
        assert self.bm.num_used_blocks == 0 and self.bm.num_free_blocks == self.nb, "blocks leaked after draining"
        self.bm.check_invariants()

    # ------------------------------------------------------------ operations
    def op_add(self):
        r = self.rng
        for _ in range(r.randint(1, 3)):
            toks = self.rand_prompt()
            key = 1 if r.random() < 0.25 else 0
            sid = self.next_id
            self.next_id += 1
            note(f"add({sid}, {toks}, extra_key={key})")
            self.s.add(sid, np.asarray(toks, dtype=np.int32) if r.random() < 0.5 else toks, extra_key=key)
            self.reqs[sid] = Req(list(toks), key, self.rand_target(len(toks)))
            self.waiting.append(sid)
            self.prompts.append((list(toks), key))

    def op_add_invalid(self):
        kind = self.rng.choice(["empty", "too_long", "duplicate"])
        sid = self.next_id
        self.next_id += 1
        note(f"add_invalid({kind})")
        if kind == "empty":
            with pytest.raises(CapacityError):
                self.s.add(sid, [])
        elif kind == "too_long":
            with pytest.raises(CapacityError):
                self.s.add(sid, [1] * (self.mml + 1))
        elif self.reqs:
            with pytest.raises(ValueError):
                self.s.add(min(self.reqs), [1])

    def op_step(self):
        for _ in range(self.rng.randint(1, 4)):
            self.flush()
            self.do_step()

    def op_update(self):
        self.flush()

    def op_fork(self):
        pid = self.rng.choice(self.live_pending())
        p = self.reqs[pid]
        cid = self.next_id
        self.next_id += 1
        note(f"fork({pid}, {cid})")
        t = L(self.bm.block_table(pid))
        rc = [self.bm.ref_count(b) for b in t]
        self.s.fork(pid, cid)
        self.reqs[cid] = Req(list(p.tokens), p.key, self.rand_target(len(p.tokens)), "running", p.computed)
        self.pending.append(cid)
        assert L(self.bm.block_table(cid)) == t, "forked child does not share the parent's block table"
        assert [self.bm.ref_count(b) for b in t] == [c + 1 for c in rc], "fork did not bump ref counts"

    def op_abort(self):
        sid = self.rng.choice(sorted(self.reqs) + [10**6])
        known = sid in self.reqs
        note(f"abort({sid})")
        assert self.s.abort(sid) is known
        if known:
            del self.reqs[sid]
            if sid in self.waiting:
                self.waiting.remove(sid)
        assert not self.bm.has_sequence(sid)

    def op_finish(self):
        sid = self.rng.choice([i for i in self.running() if i not in self.pending])
        note(f"finish({sid})")
        self.s.finish(sid)
        del self.reqs[sid]
        assert not self.bm.has_sequence(sid)

    def op_preempt(self):
        sid = self.rng.choice(self.running())
        note(f"preempt({sid})")
        self.s.preempt(sid)
        r = self.reqs[sid]
        r.status, r.computed, r.just_updated = "waiting", 0, False
        self.waiting.insert(0, sid)
        self.api_preemptions += 1
        assert not self.bm.has_sequence(sid)

    def random_op(self):
        ops = [self.op_add, self.op_add, self.op_step, self.op_step, self.op_step, self.op_add_invalid]
        if self.pending:
            ops.append(self.op_update)
        if self.live_pending():
            ops += [self.op_fork, self.op_fork]
        if self.reqs:
            ops.append(self.op_abort)
            ops.append(self.drain) if self.rng.random() < 0.3 else None
        if any(i not in self.pending for i in self.running()):
            ops.append(self.op_finish)
        if not self.live_pending() and self.running():
            ops.append(self.op_preempt)
        self.rng.choice(ops)()

    # ------------------------------------------------------------ invariants
    def consistent(self):
        s, bm = self.s, self.bm
        bm.check_invariants()
        running = self.running()
        assert L(s.waiting_ids()) == self.waiting, f"waiting_ids {L(s.waiting_ids())} != expected {self.waiting}"
        assert sorted(L(s.running_ids())) == running
        assert sorted(self.waiting + running) == sorted(self.reqs)
        assert s.num_waiting == len(self.waiting) and s.num_running == len(running)
        assert s.has_unfinished() == bool(self.reqs)
        for sid, r in self.reqs.items():
            assert s.status(sid) == r.status, f"seq {sid}: status {s.status(sid)} != {r.status}"
            assert L(s.tokens(sid)) == r.tokens, f"seq {sid}: tokens {L(s.tokens(sid))} != {r.tokens}"
            assert s.num_computed_tokens(sid) == r.computed
            assert bm.has_sequence(sid) == (r.status == "running"), f"seq {sid} ({r.status}) has_sequence mismatch"
        tables = check_tables_vs_refcounts(bm, running)
        for sid in running:
            r = self.reqs[sid]
            assert len(tables[sid]) >= cdiv(r.computed, self.bs)
            self.check_kv(sid, r.computed, tables[sid])


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(
    bs=st.sampled_from([1, 2, 4, 16]),
    nb=st.one_of(st.integers(4, 10), st.integers(4, 40)),
    mml_frac=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
    mns=st.integers(1, 8),
    mbt=st.one_of(st.integers(1, 8), st.integers(1, 64)),
    caching=st.sampled_from([True, True, True, False]),
    hash_seed=st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    rng_seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(10, 50),
)
def test_scheduler_random_ops(bs, nb, mml_frac, mns, mbt, caching, hash_seed, rng_seed, n_ops):
    cap = min(nb * bs, 48)
    mml = max(1, round(cap * (0.25 + 0.75 * mml_frac)))
    d = SchedulerDriver(bs, nb, mml, mns, mbt, caching, hash_seed, rng_seed)
    d.consistent()
    for _ in range(n_ops):
        d.random_op()
        d.consistent()
    # liveness: without new requests every request finishes in bounded steps
    d.drain()
    for e in sorted(d.events):
        event(e)
