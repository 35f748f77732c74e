"""Model file loaders. GGUF today (``tinyfast.loaders.gguf``); safetensors is planned."""

from tinyfast.loaders.gguf import (
    GGUFFile,
    GGUFTensorInfo,
    ModelConfig,
    ModelFormatError,
    QuantizedTensor,
    RopeScaling,
)

__all__ = [
    "GGUFFile",
    "GGUFTensorInfo",
    "ModelConfig",
    "ModelFormatError",
    "QuantizedTensor",
    "RopeScaling",
]
