"""The `tinyfast` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from tinyfast import info

    report = info.collect()
    print(json.dumps(report, indent=2) if args.json else info.format_report(report))
    return 0


def _engine_args(args: argparse.Namespace) -> dict:
    out = {}
    for name in ("max_num_seqs", "max_model_len", "num_kv_blocks"):
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    return out


def _sampling(args: argparse.Namespace):
    from tinyfast import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, seed=args.seed)


def _cmd_generate(args: argparse.Namespace) -> int:
    from tinyfast import LLM

    llm = LLM(args.model, **_engine_args(args))
    for out in llm.stream(args.prompt, _sampling(args)):
        sys.stdout.write(out.outputs[0].delta_text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from tinyfast import LLM

    llm = LLM(args.model, **_engine_args(args))
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print("tinyfast chat — empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        ids = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        reply = ""
        for out in llm.stream(ids, _sampling(args)):
            reply += out.outputs[0].delta_text
            sys.stdout.write(out.outputs[0].delta_text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": reply})
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="GGUF file or HuggingFace directory (default: Gemma 3 270M from tinyfast[default-model])")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens to generate at most (default 256)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--num-kv-blocks", type=int, default=None)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from tinyfast.server import serve
    except ImportError as e:  # pragma: no cover - the server dependencies are regular dependencies
        print(f"tinyfast serve: missing a server dependency ({e.name}); pip install fastapi uvicorn "
              "prometheus-client", file=sys.stderr)
        return 1
    from tinyfast.default_model import DefaultModelMissingError

    engine_args = {name: getattr(args, name) for name in _ENGINE_ARGS if getattr(args, name) is not None}
    if args.no_prefix_caching:
        engine_args["enable_prefix_caching"] = False
    origins = [o.strip() for o in (args.allowed_origins or "").split(",") if o.strip()]
    try:
        serve(args.model, host=args.host, port=args.port, api_key=args.api_key or None,
              allowed_origins=origins or None, served_model_name=args.served_model_name,
              max_queue=args.max_queue, max_body_bytes=args.max_body_bytes, warmup=not args.no_warmup,
              log_level=args.log_level, **engine_args)
    except KeyboardInterrupt:
        return 130
    except (DefaultModelMissingError, FileNotFoundError, ValueError, OSError) as e:
        print(f"tinyfast serve: {e}", file=sys.stderr)
        return 1
    return 0


_ENGINE_ARGS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "num_kv_blocks",
                "kv_cache_memory_fraction", "kv_cache_dtype")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_serve(sub) -> None:
    import os

    p = sub.add_parser(
        "serve", help="OpenAI- and Ollama-compatible HTTP server",
        description="Serve a model over HTTP: OpenAI (/v1/completions, /v1/chat/completions, /v1/models), "
                    "Ollama (/api/generate, /api/chat, /api/tags, /api/show, /api/version), /health, /metrics.")
    p.add_argument("model", nargs="?", default=None,
                   help="a .gguf file or a HuggingFace model directory (default: the bundled Gemma 3 270M)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1; 0.0.0.0 exposes the server to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0: any free port)")
    p.add_argument("--api-key", default=os.environ.get("TINYFAST_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every route but /health "
                        "(default: $TINYFAST_API_KEY, else none)")
    p.add_argument("--allowed-origins", default=None,
                   help="comma-separated CORS origins (e.g. http://localhost:3000); CORS is off without it")
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send (default: the file or directory name)")
    p.add_argument("--max-queue", type=_positive_int, default=256,
                   help="requests in flight (running + waiting) before new ones get 429 with Retry-After "
                        "(default: 256)")
    p.add_argument("--max-body-bytes", type=_positive_int, default=8 * 2**20,
                   help="request body size limit, larger bodies get 413 (default: 8 MiB)")
    p.add_argument("--no-warmup", action="store_true", help="skip the warmup request at start")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="(default: info)")
    from tinyfast.engine.llm_engine import EngineArgs

    d = EngineArgs()
    e = p.add_argument_group("engine")
    e.add_argument("--max-num-seqs", type=_positive_int, default=None,
                   help=f"sequences per step (default {d.max_num_seqs})")
    e.add_argument("--max-num-batched-tokens", type=_positive_int, default=None,
                   help=f"tokens per step (default {d.max_num_batched_tokens})")
    e.add_argument("--max-model-len", type=_positive_int, default=None,
                   help="context length (default: the model's, capped by the KV pool)")
    e.add_argument("--num-kv-blocks", type=_positive_int, default=None,
                   help="KV pool size in blocks (default: from free memory)")
    e.add_argument("--kv-cache-memory-fraction", type=float, default=None,
                   help=f"fraction of free memory for the KV pool (default {d.kv_cache_memory_fraction})")
    e.add_argument("--kv-cache-dtype", choices=["float16", "bfloat16", "float32"], default=None,
                   help=f"(default: {d.kv_cache_dtype})")
    e.add_argument("--no-prefix-caching", action="store_true", help="disable the prefix cache")
    p.set_defaults(func=_cmd_serve)


def _gen_len(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (inter-token latency needs two tokens), got {value}")
    return value


def _concurrency_list(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not levels or any(n < 1 for n in levels):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return levels


def _cmd_bench(args: argparse.Namespace) -> int:
    from tinyfast import bench_history

    if args.history:
        runs = bench_history.load(args.limit)
        if args.json:
            print(json.dumps(runs, indent=2))
        else:
            print(bench_history.format_table(runs))
        return 0
    from tinyfast import benchmark
    from tinyfast.default_model import DefaultModelMissingError

    params = benchmark.BenchParams(prompt_len=args.prompt_len, gen_len=args.gen_len,
                                   concurrency=args.concurrency)
    show = False if args.no_progress else None
    try:
        report = benchmark.run(args.model, params, show_progress=show)
    except DefaultModelMissingError as e:
        print(f"tinyfast bench: {e}", file=sys.stderr)
        return 1
    if not args.no_save:
        report["id"] = bench_history.append(report)
        report["history"] = str(bench_history.db_path())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(benchmark.format_report(report))
        if not args.no_save:
            print(f"\nsaved as run {report['id']} in {report['history']} (`tinyfast bench --history`)")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="measure TTFT, inter-token latency, decode/prefill/aggregate tok/s and peak RSS",
        description="Benchmark a model through the engine: TTFT, prefill tok/s, decode tok/s and inter-token "
                    "latency p50/p99 at batch 1, aggregate tok/s with N concurrent requests (continuous "
                    "batching), host time per decode step, roofline fraction and peak RSS. Each run is "
                    "appended to $TINYFAST_CACHE_DIR/bench.sqlite (default: $XDG_CACHE_HOME/tinyfast, "
                    "else ~/.cache/tinyfast); --history compares past runs. Exit status: 0 ok, 1 the "
                    "model could not be loaded or run, 2 bad arguments.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", nargs="?", default=None,
                   help="a .gguf file or a HuggingFace model directory (default: the bundled Gemma 3 270M)")
    p.add_argument("--prompt-len", type=_positive_int, default=512, help="prompt tokens per request")
    p.add_argument("--gen-len", type=_gen_len, default=128, help="tokens generated per request (>= 2)")
    p.add_argument("--concurrency", type=_concurrency_list, default=(1, 4, 16),
                   help="comma-separated numbers of concurrent requests")
    p.add_argument("--history", action="store_true", help="print past runs (ratios vs the previous run of "
                                                           "the same model and parameters) and exit")
    p.add_argument("--limit", type=_positive_int, default=None, help="with --history: the last N runs only")
    p.add_argument("--json", action="store_true", help="print the full report (or the history) as JSON")
    p.add_argument("--no-save", action="store_true", help="do not append this run to the history")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they show only when stderr is a terminal anyway)")
    p.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyfast", description="Fast local LLM inference on MLX.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="version, CPU features, MLX device and memory")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_info.set_defaults(func=_cmd_info)
    _add_serve(sub)
    _add_bench(sub)
    p_gen = sub.add_parser("generate", help="stream a completion of PROMPT to the terminal")
    p_gen.add_argument("prompt", help="the text to continue")
    _add_model_args(p_gen)
    p_gen.set_defaults(func=_cmd_generate)
    p_chat = sub.add_parser("chat", help="interactive chat using the model's chat template")
    p_chat.add_argument("--system", default=None, help="a system message")
    _add_model_args(p_chat)
    p_chat.set_defaults(func=_cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import tinyfast

        print(tinyfast.__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, OSError) as exc:  # bad input or a missing model: say so, no traceback
        print(f"tinyfast: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
