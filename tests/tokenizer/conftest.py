"""Session fixtures: the real GGUF vocabularies (read once) and the independent references.

The references (transformers' GGUF conversion, llama.cpp when installed) take ~30 s per model to
load, so they run in background processes started as soon as collection shows a test needs them,
while the other tests use the second core. Their results are cached on disk, keyed by model file,
corpus, runner source and library versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tokenizer_models
from tokenizer_corpus import CONVERSATIONS, CORPUS

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "reference_runner.py"
MODELS = {"gemma": tokenizer_models.gemma_path, "qwen": tokenizer_models.qwen_path}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


class References:
    """One background process computes the references for every model not yet cached."""

    def __init__(self, names: list[str]):
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.outputs: dict[str, Path] = {}
        self.skips: dict[str, str] = {}
        request = {"corpus": CORPUS, "conversations": CONVERSATIONS, "models": []}
        versions = [_version(d) for d in ("transformers", "tokenizers", "torch", "llama_cpp_python", "jinja2")]
        refs = tokenizer_models.cache_dir() / "references"
        refs.mkdir(exist_ok=True)
        for name in names:
            path = MODELS[name]()
            if path is None:
                self.skips[name] = f"the {name} GGUF packages are not installed"
                continue
            st = os.stat(path)
            identity = [path, st.st_size, st.st_mtime_ns, CORPUS, CONVERSATIONS, RUNNER.read_bytes().hex(), versions]
            key = hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()[:20]
            self.outputs[name] = out = refs / f"{name}-{key}.json"
            if not out.exists():
                request["models"].append(
                    {
                        "path": path,
                        "model_type": MODEL_TYPES[name],
                        "out": str(out),
                        "hf_dir": str(refs / f"{name}-{key}-hf"),
                    }
                )
        if not request["models"]:
            return
        req_path = refs / f"request-{os.getpid()}.json"
        req_path.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            OMP_NUM_THREADS="1",
            PYTHONWARNINGS="ignore",
        )
        self.log_path = refs / f"runner-{os.getpid()}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(RUNNER), str(req_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(HERE),
            )

    def result(self, name: str, timeout: float = 900) -> dict:
        if name in self.skips:
            pytest.skip(self.skips[name])
        out = self.outputs[name]
        deadline = time.monotonic() + timeout
        while not out.exists():
            if self.proc is None or self.proc.poll() is not None:
                log = self.log_path.read_text() if self.log_path else ""
                pytest.fail(f"the reference runner gave no result for {name}:\n{log[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the reference runner took over {timeout} s")
            time.sleep(0.2)
        with open(out, encoding="utf-8") as f:
            return json.load(f)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


MODEL_TYPES = {"gemma": "gemma3", "qwen": "qwen2"}
_references: References | None = None


def _result(name: str) -> dict:
    global _references
    if _references is None or name not in {*_references.outputs, *_references.skips}:
        _references = References([name])
    return _references.result(name)


def pytest_collection_modifyitems(config, items):
    global _references
    wanted = [name for name in MODELS if any(f"{name}_reference" in getattr(i, "fixturenames", ()) for i in items)]
    if wanted:  # start now, so the references load while the other tests run
        _references = References(wanted)


def pytest_sessionfinish(session, exitstatus):
    if _references is not None:
        _references.stop()


@pytest.fixture(scope="session")
def gemma_reference() -> dict:
    return _result("gemma")


@pytest.fixture(scope="session")
def qwen_reference() -> dict:
    return _result("qwen")


def _metadata(name: str) -> dict:
    path = MODELS[name]()
    if path is None:
        pytest.skip(f"the {name} GGUF packages are not installed")
    return tokenizer_models.read_gguf_metadata(path)


@pytest.fixture(scope="session")
def gemma_meta() -> dict:
    return _metadata("gemma")


@pytest.fixture(scope="session")
def qwen_meta() -> dict:
    return _metadata("qwen")


@pytest.fixture(scope="session")
def gemma_tok(gemma_meta):
    from tinyfast.tokenizer import Tokenizer

    return Tokenizer.from_gguf_metadata(gemma_meta)


@pytest.fixture(scope="session")
def qwen_tok(qwen_meta):
    from tinyfast.tokenizer import Tokenizer

    return Tokenizer.from_gguf_metadata(qwen_meta)


@pytest.fixture(scope="session", params=["gemma", "qwen"])
def real_tok(request):
    return request.getfixturevalue(f"{request.param}_tok")


def pytest_terminal_summary(terminalreporter):
    if tokenizer_models.AGREEMENT:
        terminalreporter.section("tokenizer agreement with independent references")
        for line in tokenizer_models.AGREEMENT:
            terminalreporter.write_line(line)
