"""Model families over shared layers, and ``load_model`` for GGUF files and HF directories."""

from tinyfast.models.base import CausalLM, ModelOptions, Weights
from tinyfast.models.gemma3 import Gemma3Model
from tinyfast.models.llama import LlamaModel
from tinyfast.models.loader import load_gguf, load_hf, load_model
from tinyfast.models.registry import MODELS, model_class

__all__ = [
    "MODELS",
    "CausalLM",
    "Gemma3Model",
    "LlamaModel",
    "ModelOptions",
    "Weights",
    "load_gguf",
    "load_hf",
    "load_model",
    "model_class",
]
