"""Tiny models through GGUF files (llama.cpp converter conventions) and mlx-community affine
checkpoints, against transformers.

F32 GGUF must match exactly as safetensors do: for ``llama`` this checks the
permuted Q/K rows + interleaved rope and the llama3 ``rope_freqs`` factors. For
quantized weights the reference is transformers running the round-tripped
(dequantized) weights, so what remains is qmatmul's 8-bit activation
quantization (~1.5% of the logit scale here).
"""

import os

import mlx.core as mx
import numpy as np
import pytest
from models import tiny_models as tm
from models.driver import prompt_step

from tinyfast.engine import ModelRunner
from tinyfast.models import load_model
from tinyfast.ops import QuantizedWeight

pytest.importorskip("gguf")
PROMPT = [int(x) for x in np.random.default_rng(0).integers(3, 320, 21)]


def _logits(path):
    model, tok = load_model(path)
    assert tok is None
    return model, np.array(ModelRunner(model, 16, 4, mx.float32).execute(prompt_step(PROMPT, 4)))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_f32_gguf_matches_transformers(tiny_hf, tmp_path, arch):
    hf, _, _ = tiny_hf(arch)
    model, got = _logits(tm.write_gguf(hf, tmp_path / "m.gguf", arch))
    assert model.options.rope.traditional == (arch == "llama")
    np.testing.assert_allclose(got, tm.hf_logits(hf, PROMPT), atol=5e-5, rtol=0)


@pytest.mark.parametrize("arch,fmt", [("llama", "q8_0"), ("llama", "q4_0"), ("qwen2", "q5_0"), ("qwen3", "q8_0")])
def test_quantized_gguf_matches_dequantized_transformers(tiny_hf, tmp_path, arch, fmt):
    hf, _, _ = tiny_hf(arch)
    model, got = _logits(tm.write_gguf(hf, tmp_path / "m.gguf", arch, quant=fmt))
    assert isinstance(model.layers[0].attn.q_proj.weight, QuantizedWeight)
    assert isinstance(model.embed.weight, QuantizedWeight)
    want = tm.hf_logits(tm.dequantized_reference(hf, fmt), PROMPT)
    np.testing.assert_allclose(got, want, atol=0.03 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("arch,bits", [("llama", 4), ("qwen2", 8), ("gemma3", 4)])
def test_mlx_affine_checkpoint_matches_dequantized_transformers(tiny_hf, tmp_path, arch, bits):
    hf, _, _ = tiny_hf(arch)
    model, got = _logits(tm.write_affine(hf, tmp_path / "affine", bits=bits))
    w = model.layers[1].mlp.down.weight
    assert isinstance(w, QuantizedWeight) and w.format == f"affine{bits}"
    want = tm.hf_logits(tm.dequantized_reference(hf, f"affine{bits}"), PROMPT)
    np.testing.assert_allclose(got, want, atol=0.03 * np.abs(want).max(), rtol=0)


def test_safetensors_weights_are_memory_mapped(tiny_hf):
    """float32 tensors are views of the file mapping, not copies."""
    _, model, path = tiny_hf("qwen3")
    from tinyfast.loaders.safetensors import SafetensorsDir

    st = SafetensorsDir(path)
    info = st.tensors["model.layers.0.mlp.up_proj.weight"]
    a = st.array(info.name)
    addr = np.array(a, copy=False).__array_interface__["data"][0]
    base = st._maps[info.file].__array_interface__["data"][0]
    assert addr == base + info.begin
    assert os.path.getsize(info.file) >= info.end


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_sharded_checkpoint(tmp_path, dtype):
    """bf16/f16 safetensors in several shards: widened to float32 at load, exact against
    transformers running the same rounded weights in float32."""
    torch = pytest.importorskip("torch")
    half = tm.build("qwen3").to(getattr(torch, dtype))
    half.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size="40KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    model, got = _logits(tmp_path)
    assert model.layers[0].attn.q_proj.weight.dtype == mx.float32
    ref = tm.build("qwen3")  # float32, rope buffers included (half.float() would keep rounded inv_freq)
    ref.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    np.testing.assert_allclose(got, tm.hf_logits(ref, PROMPT), atol=5e-5, rtol=0)
