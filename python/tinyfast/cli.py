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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyfast", description="Fast local LLM inference on MLX.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="version, CPU features, MLX device and memory")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_info.set_defaults(func=_cmd_info)
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
