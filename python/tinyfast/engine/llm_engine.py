"""The engine loop: schedule (C++) -> forward (MLX + our primitives) -> sample (C++) -> update.

Not thread-safe by itself; AsyncLLM drives it from one thread.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Sequence

import mlx.core as mx
import numpy as np

from tinyfast import _C
from tinyfast.core import CapacityError, Scheduler, SchedulerConfig
from tinyfast.engine import prompt_logprobs
from tinyfast.engine.memory import plan_kv_blocks
from tinyfast.engine.output_processor import append_token, finish_sequence
from tinyfast.engine.request_state import RequestState, SeqState
from tinyfast.outputs import RequestOutput
from tinyfast.sampling_params import SamplingParams

_KV_DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


@dataclass
class EngineArgs:
    block_size: int = 16
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None
    kv_cache_memory_fraction: float = 0.1
    num_kv_blocks: int | None = None
    enable_prefix_caching: bool = True
    kv_cache_dtype: str = "float16"
    decode_lookahead: bool = True
    """Queue the next decode step before sampling this one (model_runner.py): hides the host's
    per-step work behind the forward for greedy requests; outputs are the same either way."""

    def __post_init__(self) -> None:
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.kv_cache_dtype not in _KV_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {sorted(_KV_DTYPES)}, got {self.kv_cache_dtype!r}")


def _model_max_len(config: Any) -> int:
    for name in ("context_length", "max_position_embeddings"):
        v = getattr(config, name, None)
        if v:
            return int(v)
    raise ValueError("the model config states no context length")


class LLMEngine:
    def __init__(self, model: Any, tokenizer: Any, args: EngineArgs | None = None):
        from tinyfast.engine.model_runner import ModelRunner

        self.args = args or EngineArgs()
        self.model = model
        self.tokenizer = tokenizer
        kv_dtype = _KV_DTYPES[self.args.kv_cache_dtype]
        num_blocks, max_model_len = plan_kv_blocks(
            bytes_per_block=ModelRunner.kv_cache_bytes_per_block(model.config, self.args.block_size, kv_dtype),
            block_size=self.args.block_size,
            model_max_len=_model_max_len(model.config),
            max_num_seqs=self.args.max_num_seqs,
            memory_fraction=self.args.kv_cache_memory_fraction,
            num_blocks=self.args.num_kv_blocks,
            max_model_len=self.args.max_model_len,
        )
        self.max_model_len = max_model_len
        self.scheduler = Scheduler(SchedulerConfig(
            num_blocks=num_blocks,
            block_size=self.args.block_size,
            max_num_seqs=self.args.max_num_seqs,
            max_num_batched_tokens=self.args.max_num_batched_tokens,
            max_model_len=max_model_len,
            enable_prefix_caching=self.args.enable_prefix_caching,
        ))
        self.runner = ModelRunner(model, num_blocks, self.args.block_size, kv_dtype)
        self.requests: dict[str, RequestState] = {}
        self._seqs: dict[int, tuple[RequestState, SeqState]] = {}
        self._not_yet_scheduled: set[int] = set()  # first seq ids whose prefix hits are unread
        self._pending_prompt_logprobs: set[int] = set()  # first seq ids still owed prompt logprobs
        self._ids = itertools.count()
        self._stop_ids = frozenset(getattr(tokenizer, "eos_token_ids", ()) or ())
        self._ahead = None  # a decode step queued before its scheduler step (DecodeLaunch)
        self.stats = {"steps": 0, "prompt_tokens": 0, "generated_tokens": 0, "lookahead_used": 0,
                      "lookahead_dropped": 0}
        self.prompt_logprobs_slice_rows = prompt_logprobs.slice_rows(self.runner.vocab_size)
        """Rows of [rows, vocab] logits materialized at once for prompt logprobs."""

    # --- requests ------------------------------------------------------------------------------

    def add_request(self, request_id: str, prompt: str | Sequence[int], params: SamplingParams | None = None) -> None:
        self.add_prepared(self.prepare_request(request_id, prompt, params))

    def prepare_request(self, request_id: str, prompt: str | Sequence[int],
                        params: SamplingParams | None = None) -> RequestState:
        """Tokenizes and validates a request without touching engine state (safe from any thread)."""
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        text, ids = self._prompt_ids(prompt)
        if len(ids) >= self.max_model_len:
            raise CapacityError(
                f"prompt has {len(ids)} tokens but max_model_len is {self.max_model_len}: "
                f"no room to generate (shorten the prompt or raise max_model_len)"
            )
        room = self.max_model_len - len(ids)
        max_new = room if params.max_tokens is None else params.max_tokens
        if max_new > room:
            raise CapacityError(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_new}) exceeds max_model_len {self.max_model_len}"
            )
        seq_ids = [next(self._ids) for _ in range(params.n)]
        return RequestState(request_id, text, ids, params, seq_ids,
                            lambda: self.tokenizer.detokenizer(params.skip_special_tokens, continuation=True),
                            self._stop_ids, max_new)

    def add_prepared(self, req: RequestState) -> None:
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in use")
        # Other samples are forked after the prefill. Prompt logprobs need logits at every prompt
        # position, which a prefix-cache hit would skip (engine/prompt_logprobs.py).
        self.scheduler.add(req.seqs[0].seq_id, req.prompt_array,
                           skip_prefix_cache=req.params.prompt_logprobs is not None)
        self._not_yet_scheduled.add(req.seqs[0].seq_id)
        if req.params.prompt_logprobs is not None:
            self._pending_prompt_logprobs.add(req.seqs[0].seq_id)
        self.requests[req.request_id] = req
        for seq in req.seqs:
            self._seqs[seq.seq_id] = (req, seq)
        self.stats["prompt_tokens"] += len(req.prompt_ids)

    def _prompt_ids(self, prompt: str | Sequence[int]) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
            text = prompt
        else:
            ids = [int(t) for t in prompt]
            text = None
        if not ids:
            raise ValueError("the prompt is empty")
        vocab = self.runner.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary (size {vocab})")
        return text, ids

    def abort_request(self, request_id: str) -> bool:
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        for seq in req.seqs:
            self.scheduler.abort(seq.seq_id)
            self._seqs.pop(seq.seq_id, None)
            self._not_yet_scheduled.discard(seq.seq_id)
            finish_sequence(seq, "abort")
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # --- the step ------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """One engine step; returns a (delta) output for every request that made progress."""
        out = self.scheduler.step()
        if out.num_seqs == 0:
            if self.scheduler.has_unfinished():
                raise RuntimeError("scheduler made no progress with requests pending (bug)")
            return []
        self.stats["steps"] += 1
        prompt_rows = None
        if self._pending_prompt_logprobs:
            prompt_rows = prompt_logprobs.plan(out, self._seqs, self._pending_prompt_logprobs)
        if prompt_rows is None:
            logits = self._forward(out)
        else:
            logits, hidden = self.runner.execute_with_hidden(out, prompt_rows.rows)
            scores = prompt_logprobs.score(self.runner.model.logits, hidden, prompt_rows.targets,
                                           prompt_rows.num_logprobs, self.prompt_logprobs_slice_rows)
            prompt_logprobs.record(prompt_rows, scores, self._token_text)
        sample_ids = np.array(out.sample_seq_ids)
        touched: dict[str, RequestState] = {}
        if self._not_yet_scheduled:
            self._record_prefix_hits(out.seq_ids)
        if sample_ids.size:
            self._sample_and_update(np.asarray(logits, dtype=np.float32), sample_ids, touched)
        return [req.make_output(stream_delta=True) for req in touched.values()]

    def _forward(self, out) -> mx.array:
        """Logits of this step's sampled rows: the queued lookahead step when it is exactly this
        step; for a pure-decode step, the step after it is queued before this one is waited for."""
        ahead, self._ahead = self._ahead, None
        launch = None
        if ahead is not None:
            if self.runner.matches(ahead, out):
                launch = ahead
                self.stats["lookahead_used"] += 1
            else:
                self.stats["lookahead_dropped"] += 1
        if launch is None:
            launch = self.runner.launch_decode(out)
            if launch is None:
                return self.runner.execute(out)
        if self.args.decode_lookahead and self._lookahead_pays(out):
            new_blocks = self._reserve_next_blocks(out)
            if new_blocks is not None:
                self._ahead = self.runner.launch_lookahead(launch, new_blocks)
        return self.runner.finish_decode(launch)

    def _reserve_next_blocks(self, out) -> dict[int, int] | None:
        """For each row whose next position starts a new KV block: that block, reserved now
        (the block manager grows a table idempotently, so the scheduler's own append for the
        next step finds it in place; a finished or preempted sequence frees it with the rest).
        None when a block is not free."""
        bm = self.scheduler.block_manager
        bs = self.args.block_size
        lens = np.asarray(out.context_lens)
        rows = np.flatnonzero(lens % bs == 0)
        if rows.size == 0:
            return {}
        sids = np.asarray(out.seq_ids)
        if bm.num_free_blocks < rows.size:
            return None
        reserved = {}
        for i in rows.tolist():
            sid, ctx = int(sids[i]), int(lens[i])
            if bm.append_slots(sid, ctx + 1):  # a copy-on-write copy: not a fresh block (n > 1)
                raise RuntimeError("decode lookahead reserved a shared block (bug)")
            reserved[i] = int(bm.block_table(sid)[ctx // bs])
        return reserved

    def _lookahead_pays(self, out) -> bool:
        """Whether the next step is likely to be this step's rows, one token further: nothing
        waiting to join, and every row greedy (the lookahead feeds the argmax) with room for
        another token. A row that stops on EOS or a stop string makes the lookahead a wasted
        forward (dropped), never a wrong one."""
        if self.scheduler.num_waiting or self._pending_prompt_logprobs:
            return False
        for sid in np.asarray(out.seq_ids).tolist():
            entry = self._seqs.get(sid)
            if entry is None:
                return False
            req, seq = entry
            p = req.params
            if not (p.greedy and not p.uses_history and p.logprobs is None and p.n == 1):
                return False
            if len(seq.output_ids) + 2 > req.max_new_tokens:
                return False
        return True

    def _record_prefix_hits(self, scheduled) -> None:
        # The scheduler looks up the prefix cache when it first schedules a prompt; read the hit
        # count then, once per request (a set lookup per step, no call per running sequence).
        for sid in self._not_yet_scheduled.intersection(np.asarray(scheduled).tolist()):
            self._not_yet_scheduled.discard(sid)
            entry = self._seqs.get(sid)
            if entry is not None:
                entry[0].metrics.num_cached_tokens = self.scheduler.num_cached_tokens(sid)

    def _sample_and_update(self, logits: np.ndarray, sample_ids: np.ndarray, touched: dict) -> None:
        rows: list[int] = []  # logits row per sampled sequence
        seqs: list[tuple[RequestState, SeqState]] = []
        for row, sid in enumerate(sample_ids.tolist()):
            req, seq = self._seqs[sid]
            if not req.forked:  # first token of an n > 1 request: its samples share the prompt's KV
                for child in req.seqs[1:]:
                    self.scheduler.fork(sid, child.seq_id)
                    rows.append(row)
                    seqs.append((req, child))
                req.forked = True
            rows.append(row)
            seqs.append((req, seq))
        if rows != list(range(logits.shape[0])):
            logits = logits[rows]
        tokens, logprobs, top_ids, top_lps = self._sample(np.ascontiguousarray(logits), seqs)
        ids = np.fromiter((s.seq_id for _, s in seqs), dtype=np.int64, count=len(seqs))
        capped = set(self.scheduler.update(ids, tokens.astype(np.int32)).tolist())
        now = time.monotonic()
        token_text = self._token_text
        for i, (req, seq) in enumerate(seqs):
            k = req.params.logprobs
            top = list(zip(top_ids[i, :k].tolist(), top_lps[i, :k].tolist())) if k else None
            append_token(req, seq, int(tokens[i]), float(logprobs[i]), top, token_text)
            if seq.seq_id in capped:
                finish_sequence(seq, "length")
            elif seq.finished:
                self.scheduler.finish(seq.seq_id)
            if req.metrics.first_token_time is None:
                req.metrics.first_token_time = now
            touched[req.request_id] = req
        self.stats["generated_tokens"] += len(seqs)
        for req in touched.values():
            if req.finished:
                req.metrics.finished_time = now
                self.requests.pop(req.request_id, None)
                for seq in req.seqs:
                    self._seqs.pop(seq.seq_id, None)

    def _sample(self, logits: np.ndarray, seqs: list[tuple[RequestState, SeqState]]):
        k = len(seqs)
        params = [r.params for r, _ in seqs]
        if all(p.greedy and not p.uses_history and p.logprobs is None for p in params):
            # Nothing but the argmax is needed: no copy of the rows, no per-row parameters
            # (the same token the full sampler picks at temperature 0, which uses no RNG).
            empty = np.zeros((k, 0))
            return _C.greedy_tokens(logits), np.full(k, np.nan, np.float32), empty.astype(np.int32), empty
        f32 = lambda name: np.fromiter((getattr(p, name) for p in params), np.float32, k)  # noqa: E731
        # Any top_k >= vocab means "off"; clamping keeps a huge value from overflowing int32 (an
        # OverflowError here would kill the engine thread for every request).
        top_k = np.fromiter((min(max(p.top_k, 0), 2**31 - 1) for p in params), np.int32, k)
        states = np.stack([s.rng_state for _, s in seqs])
        empty = np.zeros(0, np.int32)
        prompts = [r.prompt_array if r.params.uses_history else empty for r, _ in seqs]
        outputs = [s.output_history() if r.params.uses_history else empty for r, s in seqs]
        want = [p.logprobs for p in params if p.logprobs is not None]
        num_logprobs = max(want) if want else -1
        result = _C.sample(logits, f32("temperature"), top_k, f32("top_p"), f32("min_p"),
                           f32("repetition_penalty"), f32("presence_penalty"), f32("frequency_penalty"),
                           states, prompts, outputs, num_logprobs)
        for i, (_, s) in enumerate(seqs):
            s.rng_state[:] = states[i]
        return result

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")
