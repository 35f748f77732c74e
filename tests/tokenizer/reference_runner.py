"""Independent reference tokenizations of the corpus, run in a separate process.

    python reference_runner.py REQUEST.json

REQUEST.json: {"corpus": [...], "conversations": [...], "models": [{"path": "x.gguf",
"model_type": "gemma3", "out": "x.json", "hf_dir": "where to save the tokenizer"}, ...]}.
Writes each model's "out" file, in order, with, per reference ("transformers", "llama_cpp"), the
ids of every corpus string with and without special tokens and their decoded text. Imports nothing from
tinyfast: the point is an independent implementation (transformers' own GGUF conversion, and
llama.cpp). It runs as a subprocess so that its ~30 s of loading overlaps the other tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback


def transformers_reference(model_path: str, model: dict, request: dict) -> dict:
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        return {"unavailable": "transformers (with torch) is not installed"}
    from transformers import AutoTokenizer

    # tokenizer_type picks the class AutoTokenizer would pick from the file's architecture, without
    # converting the whole model config (gguf.GGUFReader over every tensor: ~15 s more).
    tok = AutoTokenizer.from_pretrained(
        os.path.dirname(model_path), gguf_file=os.path.basename(model_path), tokenizer_type=model["model_type"]
    )
    out: dict = {"with_special": [], "without_special": [], "decoded": [], "chats": []}
    for text in request["corpus"]:
        ids = tok.encode(text, add_special_tokens=True)
        plain = tok.encode(text, add_special_tokens=False)
        out["with_special"].append(ids)
        out["without_special"].append(plain)
        out["decoded"].append(tok.decode(plain, skip_special_tokens=False))
    if tok.chat_template:
        for messages in request["conversations"]:
            out["chats"].append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    if model.get("hf_dir"):
        tok.save_pretrained(model["hf_dir"])
        out["hf_dir"] = model["hf_dir"]
    return out


def llama_cpp_reference(model_path: str, model: dict, request: dict) -> dict:
    if importlib.util.find_spec("llama_cpp") is None:
        return {"unavailable": "llama_cpp (llama-cpp-python) is not installed"}
    import llama_cpp

    llm = llama_cpp.Llama(model_path, vocab_only=True, verbose=False)
    out: dict = {"with_special": [], "without_special": [], "decoded": []}
    for text in request["corpus"]:
        data = text.encode("utf-8")
        out["with_special"].append(llm.tokenize(data, add_bos=True, special=True))
        plain = llm.tokenize(data, add_bos=False, special=True)
        out["without_special"].append(plain)
        out["decoded"].append(llm.detokenize(plain, special=True).decode("utf-8", "replace"))
    return out


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    for model in request["models"]:
        results = {}
        for name, fn in (("transformers", transformers_reference), ("llama_cpp", llama_cpp_reference)):
            try:
                results[name] = fn(model["path"], model, request)
            except Exception:  # reported to the tests, which fail with this text
                results[name] = {"error": traceback.format_exc()}
        tmp = f"{model['out']}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f, ensure_ascii=False)
        os.replace(tmp, model["out"])


if __name__ == "__main__":
    main()
