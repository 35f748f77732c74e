"""``load_model(path)``: a GGUF file or a HuggingFace directory -> (model, tokenizer)."""

from __future__ import annotations

import os
from pathlib import Path

from tinyfast.loaders import GGUFFile, ModelFormatError
from tinyfast.loaders.safetensors import SafetensorsDir, read_config
from tinyfast.models.base import CausalLM
from tinyfast.models.config import gguf_model_options, hf_model_config
from tinyfast.models.registry import model_class
from tinyfast.models.weights import gguf_weights, hf_weights
from tinyfast.progress import progress_bar
from tinyfast.tokenizer import Tokenizer


def load_gguf(path: str | os.PathLike, show_progress: bool | None = False) -> tuple[CausalLM, Tokenizer | None]:
    g = GGUFFile(path)
    cfg = g.model_config()
    weights = gguf_weights(g)
    has_tokenizer = "tokenizer.ggml.tokens" in g.metadata
    # One step per tensor, plus one for the tokenizer: building it from the GGUF vocabulary
    # takes longer than mapping the weights (see docs/PERFORMANCE.md).
    with progress_bar(total=len(weights.tensors) + has_tokenizer, desc=f"loading {Path(path).name}",
                      unit="step", enabled=show_progress) as bar:
        weights.materialize(bar)
        model = model_class(cfg.architecture)(cfg, gguf_model_options(g, cfg), weights)
        tokenizer = None
        if has_tokenizer:
            bar.set_description(f"loading {Path(path).name} (tokenizer)")
            tokenizer = Tokenizer.from_gguf_metadata(g.metadata)
            bar.update(1)
    g.close()  # the weight arrays keep the mapping alive
    return model, tokenizer


def load_hf(path: str | os.PathLike, show_progress: bool | None = False) -> tuple[CausalLM, Tokenizer | None]:
    config = read_config(path)
    cfg, opts = hf_model_config(config)
    st = SafetensorsDir(path)
    weights = hf_weights(st, cfg.architecture, config)
    if cfg.tie_word_embeddings:  # as transformers does: the LM head is the embedding
        weights.tensors.pop("output.weight", None)
    elif "output.weight" not in weights:
        raise ModelFormatError(f"{path}: no lm_head.weight and tie_word_embeddings is false")
    with progress_bar(total=len(weights.tensors), desc=f"loading {Path(path).name}", unit="tensor",
                      enabled=show_progress) as bar:
        weights.materialize(bar)
    model = model_class(cfg.architecture)(cfg, opts, weights)
    st.close()
    tokenizer = Tokenizer.from_hf_dir(path) if (Path(path) / "tokenizer.json").is_file() else None
    return model, tokenizer


def load_model(path_or_dir: str | os.PathLike,
               show_progress: bool | None = False) -> tuple[CausalLM, Tokenizer | None]:
    """A model and its tokenizer from a ``.gguf`` file or a HuggingFace checkpoint directory
    (config.json + safetensors). The tokenizer is None when the model carries none (a
    directory without tokenizer.json, a GGUF without ``tokenizer.ggml.tokens``).
    ``show_progress``: a progress bar on stderr while tensors load (None: if stderr is a TTY)."""
    p = Path(path_or_dir)
    if p.is_dir():
        return load_hf(p, show_progress)
    if p.is_file():
        return load_gguf(p, show_progress)
    raise FileNotFoundError(f"no model at {path_or_dir}")
