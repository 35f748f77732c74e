"""Tensors of a GGUF file or a HuggingFace directory as a :class:`Weights` store with GGUF names.

- GGUF: quantized tensors become :class:`QuantizedWeight` over the zero-copy raw
  blocks of the mapping; F32 stays a view of the mapping, F16/BF16 are widened
  to float32 once (MLX's CPU half-precision GEMM is several times slower than
  float32). Block formats the native kernels do not have are dequantized at
  load with the ``gguf`` package when it is installed, with a warning.
- HuggingFace: names are mapped to GGUF's (``HF_NAMES``, plus the Gemma 3 norms);
  mlx-community affine triples (``.weight`` uint32 codes, ``.scales``, ``.biases``)
  become ``affine4``/``affine8`` QuantizedWeights (other bit widths are dequantized
  with ``mx.dequantize``); dense tensors as for GGUF. Gemma's RMSNorm weights get
  the ``1 +`` that llama.cpp's converter bakes into GGUF files.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import numpy as np

from tinyfast.loaders import GGUFFile, ModelFormatError, QuantizedTensor
from tinyfast.loaders.safetensors import SafetensorsDir
from tinyfast.models.base import Tensor, Weights
from tinyfast.ops import QuantizedWeight
from tinyfast.ops.quant import AFFINE_GROUP_SIZES, GGUF_BLOCKS

# HuggingFace module path (after "model.layers.N.") -> GGUF tensor name (after "blk.N.")
HF_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# Gemma 3 has four norms per block; GGUF names them by what they surround.
GEMMA3_LAYER_NAMES = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
HF_GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
# Multimodal wrappers around the language model (Gemma3ForConditionalGeneration and its MLX ports).
_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("language_model.lm_head", "lm_head"), ("language_model.", ""))
_SKIP = re.compile(r"^(model\.)?(vision_tower|vision_model|multi_modal_projector)\.|rotary_emb\.inv_freq$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def hf_to_gguf_name(module: str, architecture: str) -> str | None:
    """GGUF name of an HF module path (without ``.weight``), or None if unknown."""
    for old, new in _PREFIXES:
        if module.startswith(old):
            module = new + module[len(old):]
            break
    if module in HF_GLOBAL_NAMES:
        return HF_GLOBAL_NAMES[module]
    m = _LAYER.match(module)
    if not m:
        return None
    names = {**HF_LAYER_NAMES, **GEMMA3_LAYER_NAMES} if architecture == "gemma3" else HF_LAYER_NAMES
    sub = names.get(m.group(2))
    return None if sub is None else f"blk.{m.group(1)}.{sub}"


def _dense(a: mx.array) -> mx.array:
    return a if a.dtype == mx.float32 else a.astype(mx.float32)


# ---------------------------------------------------------------- GGUF


def _gguf_dequantize(g: GGUFFile, name: str, t: QuantizedTensor) -> mx.array:
    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize
    except ImportError:
        raise ModelFormatError(
            f"GGUF: tensor {name!r} is {t.format}, which tinyfast's kernels do not support "
            f"({', '.join(GGUF_BLOCKS)}); install the 'gguf' package to dequantize it at load") from None
    warnings.warn(f"GGUF: {name} is {t.format} (no native kernel): dequantized to float32 at load", stacklevel=3)
    info = g.tensors[name]
    raw = np.asarray(g.tensor_bytes(name)).reshape(-1, info.row_bytes)
    return mx.array(dequantize(raw, GGMLQuantizationType(info.type)).reshape(info.logical_shape).astype(np.float32))


def gguf_weights(g: GGUFFile) -> Weights:
    tensors: dict[str, Tensor] = {}
    for name, info in g.tensors.items():
        if name == "rope_freqs.weight":  # read into the rope parameters
            continue
        t = g.tensor_array(name, backend="mlx")
        if isinstance(t, QuantizedTensor):
            if t.format in GGUF_BLOCKS and len(t.logical_shape) == 2:
                tensors[name] = QuantizedWeight(t.data, t.format, t.logical_shape)
            else:
                tensors[name] = _gguf_dequantize(g, name, t)
        else:
            tensors[name] = _dense(t) if mx.issubdtype(t.dtype, mx.floating) else t
    return Weights(tensors, g.path or "GGUF")


# ---------------------------------------------------------------- HuggingFace


def _affine_params(quant: Mapping[str, Any], module: str) -> tuple[int, int]:
    """(group_size, bits) of an mlx-community module (per-module overrides win)."""
    p = quant.get(module)
    if not isinstance(p, Mapping):
        p = quant
    try:
        return int(p["group_size"]), int(p["bits"])
    except KeyError:
        raise ModelFormatError(f"config.json: quantization for {module!r} lacks group_size/bits") from None


def hf_weights(st: SafetensorsDir, architecture: str, config: Mapping[str, Any]) -> Weights:
    quant = config.get("quantization") or config.get("quantization_config") or {}
    if quant and "group_size" not in quant:
        raise ModelFormatError(f"{st.path}: unsupported quantization config {dict(quant)} "
                               "(tinyfast reads mlx-community affine checkpoints)")
    tensors: dict[str, Tensor] = {}
    unknown = []
    for name in st.tensors:
        if _SKIP.search(name):
            continue
        module, _, suffix = name.rpartition(".")
        if suffix in ("scales", "biases") and f"{module}.weight" in st.tensors:
            continue  # consumed with the codes
        if suffix not in ("weight", "bias"):
            unknown.append(name)
            continue
        target = hf_to_gguf_name(module, architecture)
        if target is None:
            unknown.append(name)
            continue
        target = f"{target}.{suffix}"
        if target in tensors:
            raise ModelFormatError(f"{st.path}: two tensors map to {target!r}")
        if suffix == "weight" and f"{module}.scales" in st.tensors:
            tensors[target] = _affine(st, module, quant)
            continue
        a = st.array(name)
        if mx.issubdtype(a.dtype, mx.floating):
            a = _dense(a)
        if architecture == "gemma3" and target.endswith("norm.weight"):
            a = a + 1.0  # Gemma's RMSNorm scales by (1 + w)
        tensors[target] = a
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        warnings.warn(f"{st.path}: {len(unknown)} tensors ignored: {unknown[:5]}{more}", stacklevel=2)
    return Weights(tensors, str(st.path))


def _affine(st: SafetensorsDir, module: str, quant: Mapping[str, Any]) -> Tensor:
    if not quant:
        raise ModelFormatError(f"{st.path}: {module} has scales but config.json has no 'quantization'")
    group_size, bits = _affine_params(quant, module)
    codes, scales = st.array(f"{module}.weight"), st.array(f"{module}.scales")
    if f"{module}.biases" not in st.tensors:
        raise ModelFormatError(f"{st.path}: {module} has scales but no biases (only affine quantization is supported)")
    biases = st.array(f"{module}.biases")
    if bits in (4, 8) and group_size in AFFINE_GROUP_SIZES and codes.ndim == 2:
        return QuantizedWeight.from_affine(codes, scales, biases, group_size=group_size, bits=bits)
    warnings.warn(f"{module}: affine {bits}-bit / group {group_size} has no native kernel: dequantized at load",
                  stacklevel=3)
    return mx.dequantize(codes, scales, biases, group_size=group_size, bits=bits).astype(mx.float32)
