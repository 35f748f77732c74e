"""Short runs of the GGUF fuzzers; tests/fuzz/README.md says how to run them for longer.

- the atheris target (tests/fuzz/fuzz_gguf.py) for a few thousand inputs, and once with a
  planted bug to show the harness reports findings;
- the native driver (gguf_asan_driver.cpp) built with AddressSanitizer + UBSan over every
  truncation and random mutations of the seed files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FUZZ_TARGET = HERE / "fuzz_gguf.py"
ASAN_DRIVER = HERE / "gguf_asan_driver.cpp"
PARSER_SOURCES = [REPO / "csrc/core/gguf_parser.cpp", REPO / "csrc/core/gguf_parser.h",
                  REPO / "csrc/core/errors.h", REPO / "csrc/core/quant_blocks.h"]


@pytest.fixture(scope="module")
def seed_corpus(tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("gguf_corpus")
    subprocess.run([sys.executable, str(FUZZ_TARGET), "--write-seeds", str(corpus)], check=True,
                   capture_output=True)
    assert len(list(corpus.iterdir())) >= 5
    return corpus


def _run_fuzzer(corpus: Path, artifacts: Path, runs: int, env=None) -> subprocess.CompletedProcess:
    # libFuzzer adds new inputs to the first directory: keep the shared seeds unchanged.
    grown = artifacts / "corpus"
    grown.mkdir()
    return subprocess.run(
        [sys.executable, str(FUZZ_TARGET), str(grown), str(corpus), f"-runs={runs}", "-max_len=8192",
         "-max_total_time=60", "-seed=1", f"-artifact_prefix={artifacts}/"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )


def test_atheris_target_runs_clean(seed_corpus, tmp_path):
    pytest.importorskip("atheris")
    result = _run_fuzzer(seed_corpus, tmp_path, runs=20000)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done 20000 runs" in result.stderr, result.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*"))


def test_atheris_target_reports_a_planted_bug(seed_corpus, tmp_path):
    pytest.importorskip("atheris")
    result = _run_fuzzer(seed_corpus, tmp_path, runs=100, env={"TINYFAST_FUZZ_PLANTED_BUG": "1"})
    assert result.returncode != 0
    assert "planted bug" in result.stdout + result.stderr
    assert list(tmp_path.glob("crash-*"))


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


# -O0: with UBSan, -O1 builds take four times longer and these runs are short.
FLAGS = ["-std=c++17", "-O0", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", f"-I{REPO / 'csrc'}"]
# A bounds check off by one: lets fixed-size reads run one byte past the input.
PLANTED = ("if (n > remaining())\n      fail(pos_, std::string(\"truncated \")",
           "if (n > remaining() + 1)\n      fail(pos_, std::string(\"truncated \")")


def _build_driver(parser_source: str, tmp_dir: Path) -> Path:
    """The ASan driver over `parser_source`, cached by content (a build takes ~6 s of CPU)."""
    cxx = _compiler()
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    digest = hashlib.sha256(" ".join([cxx, *FLAGS]).encode())
    digest.update(parser_source.encode())
    for path in [*PARSER_SOURCES[1:], ASAN_DRIVER]:
        digest.update(path.read_bytes())
    cache = Path(os.environ.get("TINYFAST_TEST_CACHE", REPO / "build" / "test-cache"))
    binary = cache / f"gguf_asan_driver-{digest.hexdigest()[:16]}"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        source = tmp_dir / "gguf_parser.cpp"
        source.write_text(parser_source)
        tmp = tmp_dir / "driver"
        build = subprocess.run([cxx, *FLAGS, str(source), str(ASAN_DRIVER), "-o", str(tmp)],
                               capture_output=True, text=True)
        if build.returncode != 0 and "sanitize" in build.stderr:
            pytest.skip(f"{cxx} cannot build with AddressSanitizer here: {build.stderr[-500:]}")
        assert build.returncode == 0, build.stderr[-4000:]
        shutil.move(tmp, binary)
    return binary


def _run_driver(driver: Path, seeds: list[str], iterations: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
    return subprocess.run([str(driver), str(iterations), "12345", *seeds], capture_output=True, text=True,
                          timeout=600, env=env)


def test_parser_is_memory_safe_under_asan(seed_corpus, tmp_path):
    driver = _build_driver(PARSER_SOURCES[0].read_text(), tmp_path)
    seeds = sorted(str(p) for p in seed_corpus.iterdir())
    assert len(seeds) == 5
    result = _run_driver(driver, seeds, 2000)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    parsed, rejected = (int(x.strip(",")) for x in result.stdout.split()[1::2])
    assert parsed > len(seeds) and rejected > 1000  # both paths exercised


def test_asan_driver_catches_a_planted_over_read(seed_corpus, tmp_path):
    source = PARSER_SOURCES[0].read_text()
    assert PLANTED[0] in source, "update PLANTED to match Cursor::need"
    driver = _build_driver(source.replace(PLANTED[0], PLANTED[1]), tmp_path)
    result = _run_driver(driver, [str(seed_corpus / "small.gguf")], 0)  # truncations alone find it
    assert result.returncode != 0
    assert "heap-buffer-overflow" in result.stderr, result.stderr[-3000:]
