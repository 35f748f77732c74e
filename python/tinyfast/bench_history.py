"""The `tinyfast bench` history: one SQLite row per run in the user cache directory.

``$TINYFAST_CACHE_DIR/bench.sqlite`` when that variable is set (tests point it at a
temporary directory), else ``$XDG_CACHE_HOME/tinyfast/bench.sqlite`` (``~/.cache``
when XDG_CACHE_HOME is unset). Each row keeps the machine it ran on (no git or
user data: CPU model, cores, features, memory), the model (file name, size,
SHA-256), the parameters and every result, so runs on different days or
versions can be compared side by side.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    version TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_sha256 TEXT,
    model_bytes INTEGER,
    params TEXT NOT NULL,
    machine TEXT NOT NULL,
    results TEXT NOT NULL
)
"""


def cache_dir() -> Path:
    explicit = os.environ.get("TINYFAST_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinyfast"


def db_path() -> Path:
    return cache_dir() / "bench.sqlite"


def _connect(create: bool) -> sqlite3.Connection | None:
    path = db_path()
    if not create and not path.is_file():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute(_SCHEMA)
    return con


def append(report: dict[str, Any]) -> int:
    """Stores one `tinyfast bench` report; returns its row id."""
    model = report["model"]
    con = _connect(create=True)
    assert con is not None
    with con:
        cur = con.execute(
            "INSERT INTO runs (timestamp, version, model_id, model_sha256, model_bytes, params, machine, results) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (report["timestamp"], report["version"], model["id"], model.get("sha256"), model.get("bytes"),
             json.dumps(report["params"], sort_keys=True), json.dumps(report["machine"], sort_keys=True),
             json.dumps(report["results"], sort_keys=True)))
    con.close()
    return int(cur.lastrowid)


def load(limit: int | None = None) -> list[dict[str, Any]]:
    """Past runs, oldest first (the last ``limit`` of them)."""
    con = _connect(create=False)
    if con is None:
        return []
    rows = con.execute("SELECT id, timestamp, version, model_id, model_sha256, model_bytes, params, machine, "
                       "results FROM runs ORDER BY id").fetchall()
    con.close()
    runs = [dict(id=r[0], timestamp=r[1], version=r[2], model=dict(id=r[3], sha256=r[4], bytes=r[5]),
                 params=json.loads(r[6]), machine=json.loads(r[7]), results=json.loads(r[8])) for r in rows]
    return runs[-limit:] if limit else runs


# Columns of the history table: (header, results key, higher is better).
COLUMNS = (
    ("decode tok/s", "decode_tok_s", True),
    ("prefill tok/s", "prefill_tok_s", True),
    ("TTFT ms", "ttft_ms", False),
    ("ITL p50 ms", "itl_p50_ms", False),
    ("ITL p99 ms", "itl_p99_ms", False),
    ("peak RSS MiB", "peak_rss_mib", False),
)


def _same_setup(a: dict, b: dict) -> bool:
    return (a["model"]["id"], a["model"].get("sha256"), a["params"]) == \
        (b["model"]["id"], b["model"].get("sha256"), b["params"])


def _cell(value: Any, prev: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    text = f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(prev, (int, float)) and math.isfinite(prev) and prev > 0:
        text += f" ({value / prev:.2f}x)"
    return text


def _agg_columns(runs: Iterable[dict]) -> list[int]:
    ns: set[int] = set()
    for r in runs:
        ns.update(int(n) for n in (r["results"].get("aggregate_tok_s") or {}))
    return sorted(ns)


def format_table(runs: list[dict]) -> str:
    """A markdown table, one row per run; every number is followed by its ratio to the previous run
    with the same model (file and SHA-256) and parameters, so a regression stands out."""
    if not runs:
        return "no benchmark runs recorded yet (run `tinyfast bench`)"
    agg = _agg_columns(runs)
    header = ["id", "when (UTC)", "version", "model", "prompt/gen", "load 1m",
              *[c[0] for c in COLUMNS], *[f"agg tok/s @{n}" for n in agg]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, run in enumerate(runs):
        prev = next((r for r in reversed(runs[:i]) if _same_setup(r, run)), None)
        res, pres = run["results"], (prev["results"] if prev else {})
        p = run["params"]
        load = run["machine"].get("loadavg_1m")
        cells = [str(run["id"]), run["timestamp"][:19].replace("T", " "), run["version"], run["model"]["id"],
                 f"{p.get('prompt_len')}/{p.get('gen_len')}", "-" if load is None else f"{load:.2f}"]
        cells += [_cell(res.get(key), pres.get(key)) for _, key, _ in COLUMNS]
        a, pa = res.get("aggregate_tok_s") or {}, pres.get("aggregate_tok_s") or {}
        cells += [_cell(a.get(str(n)), pa.get(str(n))) for n in agg]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("(x.xx) = ratio to the previous run of the same model and parameters; timings are noisy "
                 "when the machine is busy (see the load column).")
    return "\n".join(lines)
