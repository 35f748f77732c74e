"""`tinyfast serve` as a user runs it: a subprocess on a free loopback port, stopped with Ctrl-C."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time

import httpx


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyfast.cli", *args], capture_output=True, text=True,
                          timeout=60, **kwargs)


def test_serve_help():
    r = _cli("serve", "--help")
    assert r.returncode == 0
    for option in ("--host", "--port", "--api-key", "--allowed-origins", "--max-num-seqs", "--max-queue",
                   "--max-model-len", "--served-model-name"):
        assert option in r.stdout
    assert "127.0.0.1" in r.stdout


def test_serve_bad_model_path_fails_cleanly(tmp_path):
    r = _cli("serve", str(tmp_path / "missing.gguf"), "--port", "0")
    assert r.returncode == 1
    assert "missing.gguf" in r.stderr and "Traceback" not in r.stderr


def test_serve_end_to_end_and_ctrl_c(model_id):
    env = {**os.environ, "TINYFAST_API_KEY": "k3y"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyfast.cli", "serve", "--port", "0", "--max-model-len", "256",
         "--num-kv-blocks", "32", "--max-num-seqs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    try:
        url = _wait_for_url(proc, log)
        deadline = time.monotonic() + 60
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "".join(log)
            time.sleep(0.1)
        assert httpx.get(url + "/v1/models").status_code == 401  # the key came from $TINYFAST_API_KEY
        auth = {"Authorization": "Bearer k3y"}
        assert httpx.get(url + "/v1/models", headers=auth).json()["data"][0]["id"] == model_id
        r = httpx.post(url + "/v1/completions", headers=auth, timeout=60,
                       json={"model": model_id, "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        log.append(out)
    output = "".join(log)
    assert proc.returncode in (0, 130), output  # 130: interrupted by SIGINT, after a clean shutdown
    assert "terminate called" not in output and "Traceback" not in output, output


def _wait_for_url(proc: subprocess.Popen, log: list[str]) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if not sel.select(timeout=1):
            assert proc.poll() is None, "".join(log)
            continue
        line = proc.stdout.readline()
        assert line, f"server exited: {''.join(log)}"
        log.append(line)
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"no address logged: {''.join(log)}")
