"""atheris fuzz target: bytes -> GGUF parser -> everything a loader does with the result.

Only ModelFormatError may escape; any other exception (or a crash) is a finding.

    python tests/fuzz/fuzz_gguf.py --write-seeds CORPUS_DIR     # small valid files to start from
    python tests/fuzz/fuzz_gguf.py CORPUS_DIR -max_len=4096 -max_total_time=600

See tests/fuzz/README.md. atheris instruments the Python side (tinyfast.loaders) for coverage;
the C++ parser is exercised but not coverage-instrumented (that needs a clang build with
-fsanitize=fuzzer-no-link); tests/fuzz/gguf_asan_driver.cpp covers memory safety natively.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent


def write_seed_corpus(directory: str | os.PathLike[str]) -> list[Path]:
    sys.path.insert(0, str(TESTS_DIR))
    from loaders.gguf_builder import ARRAY, STRING, UINT32, GGUFBuilder, small_model

    no_tensors = small_model()
    no_tensors.tensors = []
    header_only = GGUFBuilder()
    header_only.kv("general.architecture", STRING, "qwen2")
    header_only.kv("qwen2.block_count", UINT32, 1)
    header_only.kv("tokenizer.ggml.merges", ARRAY, (STRING, ["a b", "ab c"]))
    seeds = {
        "small.gguf": small_model().build(pad_data=False),
        "small_aligned64.gguf": small_model(alignment=64, extra=False).build(),
        "gemma3.gguf": small_model(arch="gemma3", alignment=None).kv(
            "gemma3.attention.sliding_window", UINT32, 16).build(),
        "no_tensors.gguf": no_tensors.build(),
        "header_only.gguf": header_only.build(),
    }
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in seeds.items():
        path = out / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def _instrument_module(atheris, module) -> None:
    import inspect

    for obj in vars(module).values():
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            atheris.instrument_func(obj)
        elif inspect.isclass(obj) and obj.__module__ == module.__name__:
            for member in vars(obj).values():
                func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if inspect.isfunction(func):
                    atheris.instrument_func(func)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        for path in write_seed_corpus(sys.argv[2]):
            print(path)
        return

    import atheris

    # Heavy dependencies first, uninstrumented; then tinyfast's loader with coverage.
    import mlx.core  # noqa: F401
    import numpy  # noqa: F401

    import tinyfast.loaders.gguf as loader
    from tinyfast.loaders import GGUFFile, ModelFormatError

    # instrument_imports() silently skips modules behind scikit-build-core's editable
    # finder, so instrument the loader's functions directly.
    _instrument_module(atheris, loader)

    planted = os.environ.get("TINYFAST_FUZZ_PLANTED_BUG") == "1"

    def test_one_input(data: bytes) -> None:
        if planted and len(data) >= 4 and data[:4] == b"GGUF":
            raise RuntimeError("planted bug: proves the harness reports findings")
        try:
            f = GGUFFile.from_buffer(data)
        except ModelFormatError:
            return
        try:
            f.model_config()
        except ModelFormatError:
            pass
        for name, info in f.tensors.items():
            assert f.tensor_bytes(name).size == info.n_bytes
            f.tensor_array(name)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
