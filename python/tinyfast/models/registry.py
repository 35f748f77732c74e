"""Model families by architecture name (GGUF ``general.architecture`` or HF ``architectures``)."""

from __future__ import annotations

from tinyfast.loaders import ModelFormatError
from tinyfast.models.gemma3 import Gemma3Model
from tinyfast.models.llama import LlamaModel

# tinyfast architecture (as in GGUF) -> model class
MODELS = {
    "llama": LlamaModel,
    "qwen2": LlamaModel,
    "qwen3": LlamaModel,
    "gemma3": Gemma3Model,
}

# HuggingFace config.json "architectures" / "model_type" -> tinyfast architecture
HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",
}
HF_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
}


def model_class(architecture: str):
    try:
        return MODELS[architecture]
    except KeyError:
        raise ModelFormatError(
            f"unsupported architecture {architecture!r} (tinyfast runs {', '.join(sorted(MODELS))})") from None


def hf_architecture(config: dict) -> str:
    """The tinyfast architecture of a HuggingFace config.json."""
    for name in config.get("architectures") or ():
        if name in HF_ARCHITECTURES:
            return HF_ARCHITECTURES[name]
    model_type = config.get("model_type")
    if model_type in HF_MODEL_TYPES:
        return HF_MODEL_TYPES[model_type]
    raise ModelFormatError(
        f"unsupported HuggingFace model: architectures={config.get('architectures')}, model_type={model_type!r} "
        f"(tinyfast runs {', '.join(sorted(HF_ARCHITECTURES))})")
