"""load_model's errors name what is wrong."""

import json

import mlx.core as mx
import pytest

from tinyfast.loaders import ModelFormatError
from tinyfast.models import load_model


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.gguf")


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="no config.json"):
        load_model(tmp_path)


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(ModelFormatError, match="unsupported HuggingFace model"):
        load_model(tmp_path)


def test_missing_tensor_is_named(tiny_hf, tmp_path):
    _, _, path = tiny_hf("llama")
    from pathlib import Path

    weights = mx.load(str(Path(path) / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    mx.save_safetensors(str(tmp_path / "model.safetensors"), weights)
    (tmp_path / "config.json").write_text((Path(path) / "config.json").read_text())
    with pytest.raises(ModelFormatError, match=r"missing tensor 'blk\.1\.ffn_up\.weight'"):
        load_model(tmp_path)


def test_truncated_safetensors(tiny_hf, tmp_path):
    from pathlib import Path

    _, _, path = tiny_hf("llama")
    (tmp_path / "config.json").write_text((Path(path) / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ModelFormatError, match="header of 16 bytes does not fit"):
        load_model(tmp_path)
