"""Greedy decoding and log-probabilities against llama.cpp on the same GGUF files.

llama.cpp (llama-cpp-python) runs in a subprocess (`llama_cpp_runner.py`); skipped when it is not
installed (it compiles llama.cpp from source, ~20 min on 2 cores, so CI does not install it).

Both engines quantize activations to 8 bits for the quantized matmuls, in different ways, so
greedy paths may part at near-ties. The test holds tinyfast to: identical greedy tokens up to the
first position where llama.cpp itself rates tinyfast's token within NEAR_TIE logits of its own
choice, and log-probabilities of tinyfast's tokens close to llama.cpp's everywhere along the path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from models.driver import greedy
from tokenizer.tokenizer_models import gemma_path, qwen_path

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="llama_cpp (llama-cpp-python) is not installed")

N_NEW = 32
NEAR_TIE = 0.5  # logits
MAX_LOGPROB_GAP = 1.0  # nats, any position: far beyond quantization noise, catches real bugs
PROMPTS = {
    "gemma": ["The capital of France is", "Q: What is the boiling point of water?\nA:", "One, two, three, four,",
              "The history of the bicycle", "def fibonacci(n):", "My favourite colour is"],
    "qwen": ["The capital of France is", "def fibonacci(n):", "import numpy as np\n", "# Sort a list in Python\n",
             "SELECT name FROM users WHERE", "The history of the bicycle"],
}
RUNNER = Path(__file__).with_name("llama_cpp_runner.py")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.mark.parametrize("name", ["gemma", "qwen"])
def test_greedy_and_logprobs_agree_with_llama_cpp(name, tmp_path):
    path = gemma_path() if name == "gemma" else qwen_path()
    if path is None:
        pytest.skip(f"the {name} GGUF package is not installed")
    from tinyfast.models import load_model

    model, tok = load_model(path)
    prompts = [tok.encode(p) for p in PROMPTS[name]]
    record: dict = {}
    ours = greedy(model, prompts, N_NEW, kv_dtype=mx.float16, record=record)
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"path": path, "n_new": N_NEW,
                               "cases": [{"prompt": p, "ours": o} for p, o in zip(prompts, ours)]}))
    res_path = tmp_path / "out.json"
    subprocess.run([sys.executable, str(RUNNER), str(req), str(res_path)], check=True, timeout=900,
                   env={**os.environ, "OMP_NUM_THREADS": "2"})
    results = json.loads(res_path.read_text())

    lines, failures = [], []
    for i, (text, p, o, r) in enumerate(zip(PROMPTS[name], prompts, ours, results)):
        theirs = r["greedy"]
        match = next((j for j, (a, b) in enumerate(zip(o, theirs)) if a != b), min(len(o), len(theirs)))
        f = r["forced"]
        # Sequence ids in `record` follow prompt order; row j is the logits that chose o[j].
        our_lp = np.array([_log_softmax(np.asarray(row, np.float64))[t] for row, t in zip(record[i], o)])
        gap = np.abs(our_lp - np.array(f["our_logprob"]))
        lines.append(f"{name} {text!r}: matching prefix {match}/{N_NEW}, logprob |diff| max {gap.max():.3f} "
                     f"mean {gap.mean():.3f}")
        if match < N_NEW:
            tie = f["top_logit"][match] - f["our_logit"][match]
            lines[-1] += f", first split: llama.cpp rates ours {tie:.3f} logits below its choice"
            if tie >= NEAR_TIE:
                failures.append(lines[-1])
        if gap.max() >= MAX_LOGPROB_GAP:
            failures.append(lines[-1])
    print("\n" + "\n".join(lines))
    assert not failures, "\n".join(failures)
