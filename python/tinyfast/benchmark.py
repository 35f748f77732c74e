"""`tinyfast bench`: latency and throughput of a model through the real engine.

What is measured (all through :class:`~tinyfast.engine.llm_engine.LLMEngine`, the loop that
``LLM`` and ``AsyncLLM`` drive; prefix caching off so every prompt is computed):

- load: seconds to build ``LLM(model)`` (mapping, tokenizer, KV pool);
- batch 1: one request of ``prompt_len`` random tokens generating exactly ``gen_len`` tokens
  (``ignore_eos``, greedy). TTFT = first token - request added; prefill tok/s = prompt_len / TTFT;
  inter-token latencies (ITL) between consecutive tokens; decode tok/s = (gen_len - 1) /
  (last token - first token);
- host time per decode step not overlapped with compute, as a fraction of the whole engine
  step: the Python/C++ time outside ``mx.eval`` (batch building, graph call, sampling, output
  processing), counted as 0 for a step whose successor was queued while it was still
  computing (decode lookahead: the stream went straight on to the next step while the host
  worked; ``ModelRunner.last_next_queued``), in full otherwise; also reported: the host's work
  per step whether overlapped or not, and the part spent building the batch and graph alone
  (``ModelRunner.last_host_time``);
- concurrency N: N requests added at once, continuous batching; aggregate tok/s = generated
  tokens / wall time from adding them to the last one finishing (prefill included);
- roofline: bytes read per decode token (every weight, the tied embedding once as the LM
  head, the KV of the mean context) / memory bandwidth (a 256 MB streaming read with the
  kernels' thread pool, best of 5, measured in the same run) -> decode tok/s at best;
- peak RSS: ``getrusage(RUSAGE_SELF).ru_maxrss`` of this process after the runs (before the
  bandwidth probe allocates its buffer).

Every phase is warmed up first (same shapes, 2 tokens) so ``mx.compile`` tracing of the
decode buckets is not timed.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tinyfast.progress import progress_bar


@dataclass(frozen=True)
class BenchParams:
    prompt_len: int = 512
    gen_len: int = 128
    concurrency: tuple[int, ...] = (1, 4, 16)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.gen_len < 2:
            raise ValueError(f"prompt_len must be >= 1 and gen_len >= 2, got {self.prompt_len} and {self.gen_len}")
        if not self.concurrency or any(n < 1 for n in self.concurrency):
            raise ValueError(f"concurrency levels must be >= 1, got {list(self.concurrency)}")


# --------------------------------------------------------------------------- machine, model


def machine_info() -> dict[str, Any]:
    """What ran the benchmark, without anything identifying the user or repository."""
    import mlx.core as mx

    import tinyfast

    feats = tinyfast.cpu_features()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load1 = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - platforms without getloadavg
        load1 = None
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {
        "cpu": cpu,
        "cores": feats.get("num_cores") or os.cpu_count(),
        "kernel_level": feats.get("kernel_level"),
        "cpu_features": sorted(k for k, v in feats.items() if v is True),
        "memory_gib": round(mem / 2**30, 1),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "mlx": mx.__version__,
        "loadavg_1m": load1,
    }


def model_identity(path: str) -> dict[str, Any]:
    """File name, size and SHA-256 (a directory: its name and total size of its files)."""
    p = Path(path)
    if p.is_dir():
        size = sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        return {"id": p.name, "path": str(p.resolve()), "bytes": size, "sha256": None}
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return {"id": p.name, "path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def weight_bytes_per_token(path: str, config: Any) -> int:
    """Weight bytes one decode step reads: every tensor, except that an untied token embedding
    is read one row at a time (a tied one is the LM head, read whole). F16/BF16 count double:
    they are widened to float32 at load."""
    p = Path(path)
    if p.is_dir():  # safetensors: the files' sizes (an untied embedding is over-counted)
        return sum(f.stat().st_size for f in p.glob("*.safetensors"))
    from tinyfast.loaders import GGUFFile

    with GGUFFile(p) as g:
        tied = "output.weight" not in g.tensors
        total = 0
        for name, info in g.tensors.items():
            n = info.n_bytes * (2 if info.type_name in ("f16", "bf16") else 1)
            if name == "token_embd.weight" and not tied:
                n //= max(1, config.vocab_size)
            total += n
        return total


def kv_bytes_per_token(config: Any, context: float, dtype_size: int = 2) -> float:
    """KV bytes one decode step reads at ``context`` tokens (sliding layers read at most their window)."""
    per_tok = config.n_kv_heads * (config.head_dim + config.v_head_dim) * dtype_size
    sliding = tuple(getattr(config, "sliding_layers", ()) or ())
    window = getattr(config, "sliding_window", None)
    total = 0.0
    for i in range(config.n_layers):
        ctx = min(context, window) if window and i < len(sliding) and sliding[i] else context
        total += ctx * per_tok
    return total


def memory_bandwidth_GBps(rounds: int = 5) -> float:
    """Best of ``rounds`` streaming reads of 256 MB with the kernels' thread pool (the probe of
    bench/test_qmatmul_bench.py)."""
    import mlx.core as mx

    from tinyfast import _C

    buf = mx.ones((64 << 20,), dtype=mx.float32)
    mx.eval(buf)
    _C._stream_read(buf)  # fault the pages in
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        _C._stream_read(buf)
        best = max(best, buf.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else math.nan


# --------------------------------------------------------------------------- the runs


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Distinct random prompts (ids away from the special tokens at the start of most vocabularies)."""
    rng = np.random.default_rng(seed)
    lo = min(1000, vocab // 4)
    return [rng.integers(lo, vocab, length).tolist() for _ in range(n)]


def _greedy(n: int):
    from tinyfast import SamplingParams

    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


def run_batch1(engine, prompt: list[int], gen_len: int, bar=None) -> dict[str, Any]:
    """One request alone; per-token timestamps and per-step host times."""
    import mlx.core as mx  # noqa: F401  (engine import side effects already done)

    runner = engine.runner
    engine.add_request("bench-b1", prompt, _greedy(gen_len))
    t_add = time.perf_counter()
    token_times: list[float] = []
    host, host_work, runner_host, steps = [], [], [], []
    n_tokens = 0
    while engine.has_unfinished_requests():
        t0 = time.perf_counter()
        outs = engine.step()
        t1 = time.perf_counter()
        for out in outs:
            new = len(out.outputs[0].delta_token_ids)
            if new:
                token_times.append(t1)
                n_tokens += new
                if bar is not None:
                    bar.update(new)
        if len(token_times) >= 2:  # a decode step (the prefill step produced token 1)
            work = max(0.0, (t1 - t0) - runner.last_eval_time)
            hidden = runner.last_next_queued
            steps.append(t1 - t0)
            host_work.append(work)
            host.append(0.0 if hidden else work)
            runner_host.append(runner.last_host_time)
    ttft = token_times[0] - t_add
    itl = np.diff(token_times)
    steps_a = np.asarray(steps)
    return {
        "generated_tokens": n_tokens,
        "ttft_ms": 1e3 * ttft,
        "prefill_tok_s": len(prompt) / ttft,
        "decode_tok_s": (len(token_times) - 1) / (token_times[-1] - token_times[0]),
        "itl_p50_ms": 1e3 * percentile(itl, 50),
        "itl_p99_ms": 1e3 * percentile(itl, 99),
        "host_fraction": float(np.median(np.asarray(host) / steps_a)),
        "host_work_fraction": float(np.median(np.asarray(host_work) / steps_a)),
        "runner_host_fraction": float(np.median(np.asarray(runner_host) / steps_a)),
        "decode_step_ms": 1e3 * float(np.median(steps_a)),
        "wall_s": token_times[-1] - t_add,
    }


def run_concurrent(engine, prompts: list[list[int]], gen_len: int, bar=None, tag: str = "c") -> dict[str, Any]:
    """All prompts added at once; aggregate generated tokens per second of wall time."""
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        engine.add_request(f"bench-{tag}-{i}", p, _greedy(gen_len))
    per_req: dict[str, int] = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            new = len(out.outputs[0].delta_token_ids)
            per_req[out.request_id] = per_req.get(out.request_id, 0) + new
            if bar is not None and new:
                bar.update(new)
    wall = time.perf_counter() - t0
    total = sum(per_req.values())
    return {"requests": len(prompts), "generated_tokens": total, "wall_s": wall, "tok_s": total / wall}


def _warmup_lengths(params: BenchParams, block: int = 16) -> list[int]:
    """Prompt lengths whose 2-token runs trace every decode graph the timed run uses: the
    block-table width bucket of the first and of the last decode step."""
    from tinyfast.engine.model_runner import width_bucket

    first = width_bucket(-(-(params.prompt_len + 1) // block))
    last = width_bucket(-(-(params.prompt_len + params.gen_len) // block))
    return [params.prompt_len] if first == last else [params.prompt_len, params.prompt_len + params.gen_len - 2]


def run(model: str | None, params: BenchParams, *, show_progress: bool | None = None,
        progress_file=None) -> dict[str, Any]:
    """Loads the model and runs every phase; returns the report that `tinyfast bench --json` prints."""
    import tinyfast
    from tinyfast.default_model import default_model_path
    from tinyfast.llm import LLM

    path = model or default_model_path()
    if not Path(path).exists():
        raise FileNotFoundError(f"no model at {path} (a .gguf file or a HuggingFace directory)")
    ident = model_identity(path)
    max_n = max(params.concurrency)
    block = 16
    per_seq_blocks = -(-(params.prompt_len + params.gen_len + 1) // block)
    t = time.perf_counter()
    llm = LLM(path, show_progress=show_progress, max_num_seqs=max_n,
              max_num_batched_tokens=max(512, min(params.prompt_len, 2048)),
              max_model_len=per_seq_blocks * block, num_kv_blocks=max_n * per_seq_blocks + 1,
              enable_prefix_caching=False)
    load_s = time.perf_counter() - t
    engine = llm.engine
    cfg = engine.model.config
    if params.prompt_len + params.gen_len > engine.max_model_len:
        raise ValueError(f"prompt_len + gen_len = {params.prompt_len + params.gen_len} exceeds the model's "
                         f"context ({engine.max_model_len})")

    wbytes = weight_bytes_per_token(path, cfg)
    kvbytes = kv_bytes_per_token(cfg, params.prompt_len + params.gen_len / 2, engine.runner.kv_dtype.size)
    vocab = engine.runner.vocab_size

    levels = sorted(set(params.concurrency))
    total_tokens = params.gen_len * (1 + sum(levels))
    with progress_bar(total=total_tokens, desc="bench", unit="tok", enabled=show_progress,
                      file=progress_file) as bar:
        bar.set_description("warmup")
        for length in _warmup_lengths(params):
            run_concurrent(engine, random_prompts(1, length, vocab, params.seed + 999), 2, tag="w1")
        bar.set_description("batch 1")
        b1 = run_batch1(engine, random_prompts(1, params.prompt_len, vocab, params.seed)[0], params.gen_len, bar)
        agg: dict[str, dict[str, Any]] = {}
        for n in levels:
            bar.set_description(f"warmup x{n}")
            for length in _warmup_lengths(params):
                run_concurrent(engine, random_prompts(n, length, vocab, params.seed + 1000 + n), 2, tag=f"w{n}")
            bar.set_description(f"concurrency {n}")
            agg[str(n)] = run_concurrent(engine, random_prompts(n, params.prompt_len, vocab, params.seed + n),
                                         params.gen_len, bar, tag=f"c{n}")

    rss = peak_rss_mib()  # before the bandwidth probe, whose 256 MB buffer is not the engine's
    bw = memory_bandwidth_GBps()
    bytes_per_token = wbytes + kvbytes
    roofline = bw * 1e9 / bytes_per_token
    results = {
        "load_s": load_s,
        **{k: v for k, v in b1.items() if k not in ("wall_s", "generated_tokens")},
        "batch1_generated_tokens": b1["generated_tokens"],
        "aggregate_tok_s": {n: r["tok_s"] for n, r in agg.items()},
        "concurrency": agg,
        "bandwidth_GBps": bw,
        "decode_bytes_per_token": bytes_per_token,
        "decode_weight_bytes": wbytes,
        "roofline_decode_tok_s": roofline,
        "roofline_fraction": b1["decode_tok_s"] / roofline,
        "kv_cache_bytes": engine.runner.num_blocks * type(engine.runner).kv_cache_bytes_per_block(
            cfg, engine.runner.block_size, engine.runner.kv_dtype),
        "peak_rss_mib": rss,
    }
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": tinyfast.__version__,
        "model": {"id": ident["id"], "path": ident["path"], "bytes": ident["bytes"], "sha256": ident["sha256"],
                  "architecture": cfg.architecture},
        "params": {**asdict(params), "concurrency": list(params.concurrency), "threads": os.cpu_count()},
        "machine": machine_info(),
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    r = report["results"]
    m = report["machine"]
    p = report["params"]
    lines = [
        f"model     {report['model']['id']} ({report['model']['bytes'] / 2**20:.0f} MiB, "
        f"{report['model']['architecture']})",
        f"machine   {m['cpu']}, {m['cores']} cores, {m['kernel_level']}, load average {m['loadavg_1m']}",
        f"params    prompt {p['prompt_len']} tokens, generate {p['gen_len']}, concurrency {p['concurrency']}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| load | {r['load_s']:.2f} s |",
        f"| TTFT ({p['prompt_len']}-token prompt) | {r['ttft_ms']:.1f} ms |",
        f"| prefill | {r['prefill_tok_s']:.1f} tok/s |",
        f"| decode, batch 1 | {r['decode_tok_s']:.1f} tok/s |",
        f"| inter-token latency p50 / p99 | {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} ms |",
        f"| host time per decode step not overlapped with compute | {100 * r['host_fraction']:.1f} % "
        f"(host work {100 * r['host_work_fraction']:.1f} %, of it batch+graph build "
        f"{100 * r['runner_host_fraction']:.1f} %) |",
        f"| roofline: {r['decode_bytes_per_token'] / 2**20:.0f} MiB/token at {r['bandwidth_GBps']:.1f} GB/s | "
        f"{r['roofline_decode_tok_s']:.0f} tok/s; decode reaches {100 * r['roofline_fraction']:.0f} % |",
    ]
    for n, c in r["concurrency"].items():
        lines.append(f"| aggregate, {n} concurrent | {c['tok_s']:.1f} tok/s ({c['generated_tokens']} tokens "
                     f"in {c['wall_s']:.1f} s) |")
    lines.append(f"| peak RSS | {r['peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines)
