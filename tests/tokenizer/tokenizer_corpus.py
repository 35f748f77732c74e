"""Text the tokenizers are checked on: every case here once tripped some tokenizer somewhere."""

CODE_PY = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
	print(fib(10))  # tab-indented on purpose
'''

CODE_C = """#include <stdio.h>
int main(void) {
  for (int i = 0; i < 10; ++i) { printf("%d\\n", i * i); }
  return 0;   /* trailing spaces after this */   
}
"""

JSON_TEXT = '{"name": "tinyfast", "version": [0, 1, 0], "ok": true, "nested": {"k": null, "π": 3.14159}}'

PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. It's 12:45 p.m. on 2024-06-01, and we've "
    "measured 1,234,567.89 tokens/s (±0.5%) — not bad! Don't you think? I'M SURE they'll agree; "
    "you'd be surprised how often WE'VE seen this."
)

CORPUS: list[str] = [
    # ASCII prose, numbers, punctuation, contractions
    "Hello world",
    "Hello, world! How are you today?",
    PARAGRAPH,
    "1234567890 3.14159 -42 +7 1e-9 0x1F 12,345",
    "I'm can't won't y'all they'LL it's O'Neil 'quoted'",
    "!@#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "https://example.com/path?query=1&x=y#frag user@example.org",
    "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$",
    "# Title\n\n- item one\n- item two\n\n```python\nprint('hi')\n```\n",
    # code and indentation
    CODE_PY,
    CODE_C,
    JSON_TEXT,
    "    four leading spaces",
    "\t\ttwo tabs\tand\tmore\t",
    "key:\n  - a\n  - b\n    nested: true\n",
    # whitespace runs and line endings
    "a  b   c    d     e",
    " leading space",
    "trailing space ",
    "  two leading, two trailing  ",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "x\n \n  \ny",
    "line one\r\nline two\r\n",
    "spaces then newline   \n   and back",
    " " * 40 + "deep",
    "\n" * 35 + "end",
    "",
    # emoji (incl. ZWJ sequences, skin tones, flags, keycaps)
    "😀",
    "I ❤️ tokenizers 😀👍🏽🎉",
    "👨‍👩‍👧‍👦 family 🇫🇷🇯🇵 flags 1️⃣ keycap",
    # CJK, other scripts
    "日本語のテキストです。東京は大きい。",
    "我们正在测试中文分词。你好，世界！",
    "한국어 문장도 테스트합니다.",
    "Привет, мир! Ελληνικά κείμενα. שלום עולם. مرحبا بالعالم.",
    "हिन्दी पाठ और ภาษาไทย ข้อความ",
    # accents: composed, and decomposed (NFC changes the latter)
    "café naïve Ångström crème brûlée Zürich São Paulo",
    "cafe\u0301 A\u030angstro\u0308m",
    "caf\u00e9 \u00c5ngstr\u00f6m",  # the NFC form of the line above
    # rare characters that need byte fallback, controls, invisible characters
    "\u2fd5\u2fd4 \U0001f9ff \U0001d518\U0001d52b\U0001d526",
    "\U00010348 \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "nul\x00bell\x07esc\x1b del\x7f",
    "zero\u200bwidth\u200djoiner\ufeffbom \u00a0nbsp",
    "private \ue000\uf8ff area",
    # control and user-defined tokens written in text
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "<bos>text<eos> and <pad><unk>",
    "<|endoftext|>after end",
    "<table><tr><td>1</td><td>two</td></tr></table> <b>bold</b> <s>strike</s>",
    '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
    "almost special: <start_of_turn <|im_end| <<|im_end|>> [multimodal]",
    "<|fim_prefix|>def f(<|fim_suffix|>):\n    pass<|fim_middle|>",
]

# Conversations rendered by the chat-template tests (and by transformers, for comparison).
CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    [
        {"role": "user", "content": "Write hello world in C.\n"},
        {"role": "assistant", "content": '```c\nint main(){puts("hello world");}\n```'},
        {"role": "user", "content": "Now in Python — with émojis 😀"},
    ],
]
