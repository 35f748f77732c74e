"""AsyncLLM: the engine on a background thread, for servers.

Requests are validated on the caller's thread, then handed to the engine
thread through a short critical section; the engine thread alone touches the
engine, so a forward never blocks a caller's event loop. Each request's
outputs stream through its own asyncio queue.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from typing import Any, AsyncIterator, Sequence

from tinyfast.engine.llm_engine import LLMEngine
from tinyfast.engine.request_state import RequestState
from tinyfast.outputs import RequestOutput
from tinyfast.sampling_params import SamplingParams


class EngineDeadError(RuntimeError):
    """The engine loop failed; no request can complete."""


class AsyncLLM:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._pending_adds: list[RequestState] = []
        self._pending_aborts: list[str] = []
        self._counter = 0
        self._stopping = False
        self.dead: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="tinyfast-engine", daemon=True)
        self._thread.start()
        # Stop the thread before the interpreter finalizes even if nobody called shutdown (see
        # _release_compiled); a weak reference, so this does not keep the engine alive.
        atexit.register(_shutdown_at_exit, weakref.ref(self))

    @classmethod
    def from_model(cls, model: str | None = None, **engine_args: Any) -> "AsyncLLM":
        from tinyfast.llm import LLM

        return cls(LLM(model, **engine_args).engine)

    async def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Streams this request's outputs; leaving the iteration early aborts the request."""
        with self._lock:
            self._counter += 1
            rid = request_id or f"req-{self._counter}"
        req = self.engine.prepare_request(rid, prompt, params)  # validation errors surface here
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if self.dead is not None:
                raise EngineDeadError(f"the engine stopped after an error: {self.dead!r}")
            if self._stopping:
                raise EngineDeadError("the engine is shutting down")
            if rid in self._queues:
                raise ValueError(f"request id {rid!r} is already in use")
            self._queues[rid] = (asyncio.get_running_loop(), queue)
            self._pending_adds.append(req)
            self._wake.notify()
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise EngineDeadError(f"the engine stopped after an error: {item!r}") from item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self.abort(rid)

    def abort(self, request_id: str) -> None:
        """Stops a request at the next step boundary and frees its KV blocks."""
        with self._lock:
            if self._queues.pop(request_id, None) is not None:
                self._pending_aborts.append(request_id)
                self._wake.notify()

    def shutdown(self) -> None:
        """Stops the engine thread and aborts what is left, so no KV block stays taken."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            raise RuntimeError("the engine thread did not stop within 60 s")
        with self._lock:
            waiters, self._queues = list(self._queues.values()), {}
            self._pending_adds, self._pending_aborts = [], []
        for rid in list(self.engine.requests):
            self.engine.abort_request(rid)
        for loop, queue in waiters:
            _deliver(loop, queue, EngineDeadError("the engine was shut down"))

    @property
    def num_requests(self) -> int:
        with self._lock:
            return len(self._queues)

    def _take_pending(self) -> bool:
        """Moves queued adds/aborts into the engine; False when it is time to stop."""
        with self._lock:
            while (not self._stopping and not self._pending_adds and not self._pending_aborts
                   and not self.engine.has_unfinished_requests()):
                self._wake.wait()
            if self._stopping:
                return False
            adds, self._pending_adds = self._pending_adds, []
            aborts, self._pending_aborts = self._pending_aborts, []
        for rid in aborts:
            if not self.engine.abort_request(rid):
                adds = [r for r in adds if r.request_id != rid]  # aborted before it was ever added
        for req in adds:
            self.engine.add_prepared(req)
        return True

    def _loop(self) -> None:
        try:
            self._run()
        finally:
            self._release_compiled()

    def _release_compiled(self) -> None:
        # This thread's mx.compile cache is destroyed after the thread function returns; when that
        # races the interpreter's finalization (process exit right after shutdown), MLX takes the
        # GIL from a C++ thread-exit destructor and the process aborts ("terminate called without
        # an active exception", exit code 134). Emptying it here, while Python is alive, avoids that.
        runner = getattr(self.engine, "runner", None)
        if runner is not None:
            runner.release_compiled()

    def _run(self) -> None:
        while self._take_pending():
            try:
                outputs = self.engine.step()
            except BaseException as exc:  # the engine is unusable: fail every waiter, accept no more
                with self._lock:
                    self.dead = exc
                    waiters, self._queues = list(self._queues.values()), {}
                for loop, queue in waiters:
                    _deliver(loop, queue, exc)
                return
            with self._lock:
                deliveries = []
                for out in outputs:
                    target = self._queues.get(out.request_id)
                    if target is not None:
                        deliveries.append((target, out))
                        if out.finished:
                            del self._queues[out.request_id]
            for (loop, queue), out in deliveries:
                if not _deliver(loop, queue, out):
                    self.abort(out.request_id)


def _shutdown_at_exit(ref: "weakref.ref[AsyncLLM]") -> None:
    llm = ref()
    if llm is not None and llm._thread.is_alive():
        llm.shutdown()


def _deliver(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item: Any) -> bool:
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
        return True
    except RuntimeError:  # the caller's event loop is closed; nobody is listening
        return False
