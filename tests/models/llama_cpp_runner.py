"""llama.cpp's view of token sequences, run in a separate process (no tinyfast or MLX imports).

    python llama_cpp_runner.py REQUEST.json OUT.json

REQUEST.json: {"path": "model.gguf", "n_new": 32, "cases": [{"prompt": [ids], "ours": [ids]}, ...]}.
For each case, OUT.json holds llama.cpp's own greedy continuation of the prompt ("greedy") and,
teacher-forced along tinyfast's continuation ("ours"), per generated position: llama.cpp's top
token, its logit, the logit and log-probability of tinyfast's token ("forced").
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def main() -> None:
    import llama_cpp

    with open(sys.argv[1], encoding="utf-8") as f:
        req = json.load(f)
    n_ctx = max(len(c["prompt"]) + max(len(c["ours"]), req["n_new"]) for c in req["cases"]) + 8
    llm = llama_cpp.Llama(req["path"], n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True, verbose=False)
    out = []
    for case in req["cases"]:
        prompt, ours = case["prompt"], case["ours"]
        llm.reset()
        llm.eval(prompt)
        greedy = []
        for _ in range(req["n_new"]):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(tok)
            llm.eval([tok])
        llm.reset()
        llm.eval(prompt + ours)
        logits = np.asarray(llm.scores[len(prompt) - 1 : len(prompt) + len(ours) - 1], dtype=np.float64)
        lp = _log_softmax(logits)
        rows = np.arange(len(ours))
        out.append({
            "greedy": greedy,
            "forced": {
                "top": logits.argmax(-1).tolist(),
                "top_logit": logits.max(-1).tolist(),
                "our_logit": logits[rows, ours].tolist(),
                "our_logprob": lp[rows, ours].tolist(),
            },
        })
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
