"""ModelRunner: the KV pools, one scheduler step -> one forward -> logits.

``execute(out)`` takes a ``tinyfast.core.SchedulerOutput`` (or anything with the
same attributes as NumPy arrays), performs its copy-on-write block copies, builds
the flat batch as MLX arrays and runs one forward over every scheduled token
(prefill chunks, prefix-cache continuations and decode tokens together). It
returns float32 logits at ``out.logits_indices`` only, evaluated
(``execute_with_hidden`` also returns the hidden states of chosen rows, for prompt logprobs).

Pure-decode steps (one token per sequence) run a forward traced once with
``mx.compile`` per (batch bucket, block-table width bucket), like CUDA-graph
capture sizes: the batch is padded to the bucket with slot -1 (``write_kv``
skips it, so padding never touches the KV pools) and a one-token context in
block 0 (read-only; the padded rows' outputs are dropped). Every op works per
row (rms_norm, qmatmul with per-row activation quantization, paged attention),
so padding cannot change a real row's result. Mixed steps run eagerly: their
cost is dominated by prefill compute, and shapes vary too much to trace.

Decode lookahead (``launch_decode`` / ``launch_lookahead`` / ``finish_decode``):
the engine queues a pure-decode step, then queues the step after it before
waiting - fed with the argmax of the first step's logits, still lazy, at every
row's next position (a row entering a new KV block gets one the engine reserved
from the block manager ahead of the scheduler) - and only then waits for the
first. MLX computes the two back to back while Python samples, detokenizes and
schedules, so the host's work overlaps the forward instead of adding to it. The engine uses the queued
step only if the scheduler then produces exactly that batch (``matches``);
otherwise it is dropped. A dropped lookahead has written K/V only at each
row's next slot, inside the row's partial last block (or the block reserved for
it): a continuing sequence rewrites that slot in its real step, and a finished
or preempted one's partial block is never in the prefix cache and is written by
any next owner before being read (the MLX stream runs steps in the order queued).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from tinyfast import _C
from tinyfast.engine.memory import zeroed_pool
from tinyfast.layers import AttentionMetadata
from tinyfast.ops import write_kv

_DECODE_BUCKETS = (1, 2, 4, 8)


def decode_bucket(n: int) -> int:
    """Padded batch size of a decode step: 1, 2, 4, 8, then multiples of 8."""
    for b in _DECODE_BUCKETS:
        if n <= b:
            return b
    return -(-n // 8) * 8


def width_bucket(n: int) -> int:
    """Padded block-table width: the next power of two (kernels walk only a row's used blocks)."""
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass
class DecodeLaunch:
    """A pure-decode step queued on the MLX stream, its inputs padded to the batch bucket."""

    logits: mx.array          # [bucket, vocab], lazy until finish_decode
    n: int                    # real rows
    tokens: np.ndarray | mx.array  # scheduled token ids, or the lazy argmax of the previous step
    positions: np.ndarray
    slots: np.ndarray
    tables: np.ndarray
    lens: np.ndarray
    host_time: float          # seconds spent building the inputs and the graph
    next_queued: bool = False  # the step after this one was queued while this one still computed


class ModelRunner:
    # Eager steps with at least this many tokens are evaluated block by block: MLX allocates an
    # op's output when the op is queued, and a long prefill queued as one graph held many
    # blocks' activations at once (Gemma, 8192 tokens: 1.4 GB peak vs 0.6 GB). Shorter steps
    # stay one graph so the host can queue ahead of the kernels.
    EVAL_EACH_LAYER_TOKENS = 64

    def __init__(self, model, num_blocks: int, block_size: int, kv_dtype=mx.float16, *,
                 compile_decode: bool = True):
        cfg = model.config
        if cfg.v_head_dim != cfg.head_dim:
            raise ValueError(f"K and V head sizes differ ({cfg.head_dim} vs {cfg.v_head_dim}); not supported")
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks} and {block_size}")
        self.model = model
        self.num_blocks, self.block_size, self.kv_dtype = num_blocks, block_size, kv_dtype
        self.vocab_size = cfg.vocab_size
        shape = (num_blocks, block_size, cfg.n_kv_heads, cfg.head_dim)
        # One array per layer and per K/V: write_kv needs row-contiguous pools it can
        # write in place (an integer index into one big array would gather a copy).
        self.kv_caches = [(zeroed_pool(shape, kv_dtype), zeroed_pool(shape, kv_dtype))
                          for _ in range(cfg.n_layers)]
        mx.eval(self.kv_caches)
        self._decode = mx.compile(self._decode_forward) if compile_decode else None
        self.last_host_time = 0.0
        """Seconds of the last ``execute`` spent in Python building the batch and graph."""
        self._layer_eval_time = 0.0  # of the last execute, spent in the block-by-block evals
        self._queue_wait = 0.0  # seconds async_eval blocked since the last finished step
        self.last_step_time = 0.0
        """Seconds of the whole last ``execute`` (host + evaluation)."""
        self.last_eval_time = 0.0
        """Seconds the last step's caller waited for its results (``mx.eval``)."""
        self.last_next_queued = False
        """Whether the step after the last one was queued while the last one was still computing
        (decode lookahead): the stream then had no idle gap between them."""

    def release_compiled(self) -> None:
        """Drops the compiled decode graphs; later decode steps run eagerly.

        mx.compile caches traces per thread, and the cache entries hold Python objects. Call this
        on the thread that ran the compiled graphs before that thread exits, so the cache is
        emptied while the interpreter is alive (see AsyncLLM)."""
        self._decode = None

    @staticmethod
    def kv_cache_bytes_per_block(model_config, block_size: int, kv_dtype=mx.float16) -> int:
        """Bytes of one block across every layer's K and V pools."""
        c = model_config
        return c.n_layers * block_size * c.n_kv_heads * (c.head_dim + c.v_head_dim) * kv_dtype.size

    # ------------------------------------------------------------------ step

    def execute(self, out) -> mx.array:
        return self._execute(out, None)[0]

    def execute_with_hidden(self, out, hidden_rows: np.ndarray) -> tuple[mx.array, mx.array]:
        """Like ``execute``, plus the final hidden states (before the final norm) of the flat-batch
        rows ``hidden_rows``, evaluated: prompt logprobs turn them into logits in slices
        (``model.logits``) instead of materializing [rows, vocab] at once."""
        logits, hidden = self._execute(out, np.asarray(hidden_rows, dtype=np.int32))
        assert hidden is not None
        return logits, hidden

    def _execute(self, out, hidden_rows: np.ndarray | None) -> tuple[mx.array, mx.array | None]:
        t0 = time.perf_counter()
        self._layer_eval_time = 0.0
        copies = np.asarray(out.block_copies)
        if copies.size:
            self._copy_blocks(copies)
        num_tokens = len(out.token_ids)
        if num_tokens == 0:
            hidden = None if hidden_rows is None else mx.zeros((0, self.model.config.hidden), dtype=mx.float32)
            return mx.zeros((0, self.vocab_size), dtype=mx.float32), hidden
        nst = np.asarray(out.num_scheduled_tokens)
        hidden = None
        # The traced decode forward returns sampled logits only; a step that needs hidden rows
        # (a one-token prefill chunk of a prompt-logprobs request) runs eagerly.
        if self._decode is not None and (nst == 1).all() and hidden_rows is None:
            logits = self._execute_decode(out)
            written = ()
        else:
            logits, hidden, written = self._execute_mixed(out, hidden_rows)
        t1 = time.perf_counter()
        mx.eval(logits, hidden, written)
        t2 = time.perf_counter()
        self.last_host_time = t1 - t0 - self._layer_eval_time
        self.last_step_time = t2 - t0
        self.last_eval_time = t2 - t1 + self._layer_eval_time + self._queue_wait
        self._queue_wait = 0.0
        self.last_next_queued = False
        return logits, hidden

    # ------------------------------------------------------- decode lookahead

    def launch_decode(self, out) -> DecodeLaunch | None:
        """Queues a pure-decode step (every row one token, every row sampled, no block
        copies) without waiting; None when ``out`` is not one (use ``execute``)."""
        t0 = time.perf_counter()
        n = len(out.token_ids)
        if self._decode is None or n == 0 or np.asarray(out.block_copies).size:
            return None
        if not (np.asarray(out.num_scheduled_tokens) == 1).all():
            return None
        idx = np.asarray(out.logits_indices)
        if len(idx) != n or not (idx == np.arange(n)).all():
            return None
        tokens, positions, slots, tables, lens = self._decode_inputs(out)
        logits = self._decode_graph(tokens, positions, slots, tables, lens)
        launch = DecodeLaunch(logits, n, tokens, positions, slots, tables, lens, time.perf_counter() - t0)
        self._queue(logits)
        return launch

    def launch_lookahead(self, prev: DecodeLaunch,
                         new_blocks: dict[int, int] | None = None) -> DecodeLaunch | None:
        """Queues the decode step after ``prev``: the same rows, each fed the argmax of its
        logits in ``prev`` at its next position. A row whose next position starts a new KV
        block needs that block in ``new_blocks`` (row -> block id, reserved by the caller
        from the block manager); None when one is missing or the decode graph was released."""
        t0 = time.perf_counter()
        n = prev.n
        if self._decode is None:
            return None
        bs = self.block_size
        positions, slots, lens, tables = prev.positions.copy(), prev.slots.copy(), prev.lens.copy(), prev.tables
        positions[:n] += 1
        lens[:n] += 1
        crossing = np.flatnonzero((prev.slots[:n] + 1) % bs == 0)
        if crossing.size:
            new_blocks = new_blocks or {}
            if any(int(i) not in new_blocks for i in crossing):
                return None
            width = max(tables.shape[1], int(positions[crossing].max()) // bs + 1)
            grown = np.full((tables.shape[0], width_bucket(width)), -1, dtype=np.int32)
            grown[:, : tables.shape[1]] = tables
            tables = grown
        slots[:n] += 1
        for i in crossing:
            block = int(new_blocks[int(i)])
            tables[i, int(positions[i]) // bs] = block
            slots[i] = block * bs
        tokens = mx.argmax(prev.logits, axis=-1).astype(mx.int32)
        # Queued by itself so that ``matches`` can read it as soon as it is computed: an array
        # queued inside a bigger async_eval is only signalled when that whole graph finishes.
        self._queue(tokens)
        logits = self._decode_graph(tokens, positions, slots, tables, lens)
        # Queued behind a step that is still computing, the stream goes straight on to this one
        # (MLX's CPU scheduler lets only ~100 ops be in flight, so async_eval itself returns near
        # the end of `prev`; the host's remaining work overlaps this step's tail).
        prev.next_queued = not _C.array_ready(prev.logits)
        launch = DecodeLaunch(logits, n, tokens, positions, slots, tables, lens, time.perf_counter() - t0)
        self._queue(logits)
        return launch

    def _queue(self, a: mx.array) -> None:
        # async_eval blocks while MLX's in-flight op limit is reached: that is waiting for the
        # stream, not host work, and is reported with the wait of the step being finished.
        t0 = time.perf_counter()
        mx.async_eval(a)
        self._queue_wait += time.perf_counter() - t0

    def matches(self, launch: DecodeLaunch, out) -> bool:
        """Whether scheduler output ``out`` is exactly the step ``launch`` computes."""
        n = launch.n
        if len(out.token_ids) != n or np.asarray(out.block_copies).size:
            return False
        if not (np.asarray(out.num_scheduled_tokens) == 1).all():
            return False
        idx = np.asarray(out.logits_indices)
        if len(idx) != n or not (idx == np.arange(n)).all():
            return False
        src = np.asarray(out.block_tables, dtype=np.int32)
        w = src.shape[1]
        if w > launch.tables.shape[1] or (w and not (launch.tables[:n, :w] == src).all()):
            return False
        if (launch.tables[:n, w:] != -1).any():
            return False
        return bool((np.asarray(out.positions) == launch.positions[:n]).all()
                    and (np.asarray(out.slot_mapping) == launch.slots[:n]).all()
                    and (np.asarray(out.context_lens) == launch.lens[:n]).all()
                    and (np.asarray(out.token_ids) == np.asarray(launch.tokens)[:n]).all())

    def finish_decode(self, launch: DecodeLaunch) -> mx.array:
        """Waits for a launched step; its logits rows, evaluated."""
        t0 = time.perf_counter()
        mx.eval(launch.logits)
        self.last_eval_time = time.perf_counter() - t0 + self._queue_wait
        self._queue_wait = 0.0
        self.last_host_time = launch.host_time
        self.last_step_time = launch.host_time + self.last_eval_time
        self.last_next_queued = launch.next_queued
        return launch.logits[: launch.n] if launch.n < launch.logits.shape[0] else launch.logits

    def _execute_mixed(self, out, hidden_rows: np.ndarray | None):
        tables = np.asarray(out.block_tables, dtype=np.int32)
        if tables.shape[1] == 0:
            tables = np.full((tables.shape[0], 1), -1, np.int32)
        meta = AttentionMetadata(
            slot_mapping=mx.array(np.asarray(out.slot_mapping, dtype=np.int32)),
            block_tables=mx.array(tables),
            context_lens=mx.array(np.asarray(out.context_lens, dtype=np.int32)),
            query_start_loc=mx.array(np.asarray(out.query_start_loc, dtype=np.int32)),
        )
        token_ids = np.asarray(out.token_ids, dtype=np.int32)
        after_layer = self._eval_layer if len(token_ids) >= self.EVAL_EACH_LAYER_TOKENS else None
        h, written = self.model.hidden_states(mx.array(token_ids), mx.array(np.asarray(out.positions, dtype=np.int32)),
                                              meta, self.kv_caches, after_layer=after_layer)
        logits = self.model.logits(mx.take(h, mx.array(np.asarray(out.logits_indices, dtype=np.int32)), axis=0))
        hidden = None if hidden_rows is None else mx.take(h, mx.array(hidden_rows), axis=0)
        return logits, hidden, written

    def _eval_layer(self, h: mx.array, cache) -> None:
        t = time.perf_counter()
        mx.eval(h, cache)
        self._layer_eval_time += time.perf_counter() - t

    def _decode_inputs(self, out):
        """The decode graph's inputs, padded to the batch and table-width buckets."""
        n = len(out.token_ids)
        b = decode_bucket(n)
        src = np.asarray(out.block_tables, dtype=np.int32)
        tables = np.full((b, width_bucket(max(src.shape[1], 1))), -1, dtype=np.int32)
        tables[:n, : src.shape[1]] = src
        tables[n:, 0] = 0  # padding rows: a one-token context in block 0, read only
        tokens, positions = np.zeros(b, np.int32), np.zeros(b, np.int32)
        slots, lens = np.full(b, -1, np.int32), np.ones(b, np.int32)
        tokens[:n], positions[:n] = out.token_ids, out.positions
        slots[:n], lens[:n] = out.slot_mapping, out.context_lens
        return tokens, positions, slots, tables, lens

    def _decode_graph(self, tokens, positions, slots, tables, lens) -> mx.array:
        return self._decode(mx.array(tokens) if isinstance(tokens, np.ndarray) else tokens, mx.array(positions),
                            mx.array(slots), mx.array(tables), mx.array(lens), self.kv_caches)

    def _execute_decode(self, out) -> mx.array:
        n = len(out.token_ids)
        b = decode_bucket(n)
        logits = self._decode_graph(*self._decode_inputs(out))
        idx = np.asarray(out.logits_indices, dtype=np.int32)
        if len(idx) == n and (idx == np.arange(n)).all():
            return logits[:n] if n < b else logits
        return mx.take(logits, mx.array(idx), axis=0)

    def _decode_forward(self, tokens, positions, slots, tables, lens, caches):
        meta = AttentionMetadata(slot_mapping=slots, block_tables=tables, context_lens=lens)
        logits, _ = self.model(tokens, positions, meta, caches)
        return logits

    def _copy_blocks(self, copies: np.ndarray) -> None:
        """Copy-on-write: block ``src`` -> block ``dst`` in every pool, in place (via write_kv)."""
        src = mx.array(copies[:, 0].astype(np.int32))
        bs = self.block_size
        slots = mx.array((copies[:, 1].astype(np.int64)[:, None] * bs + np.arange(bs)).reshape(-1).astype(np.int32))
        written = []
        for k_pool, v_pool in self.kv_caches:
            rows = (-1, *k_pool.shape[2:])
            k = mx.take(k_pool, src, axis=0).reshape(rows)
            v = mx.take(v_pool, src, axis=0).reshape(rows)
            written.append(write_kv(k, v, k_pool, v_pool, slots))
        mx.eval(written)
