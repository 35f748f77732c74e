"""Hyperparameters from HuggingFace config.json or GGUF metadata, as ModelConfig + ModelOptions.

GGUF files get their :class:`ModelConfig` from ``GGUFFile.model_config()``;
HuggingFace directories get the same dataclass from :func:`hf_model_config`, so a
model never knows where it came from. Both old-style (``rope_theta``,
``rope_scaling``, ``rope_local_base_freq``) and transformers-5 style
(``rope_parameters``, per layer type for Gemma 3) configs are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tinyfast.layers import RopeParams
from tinyfast.loaders import GGUFFile, ModelConfig, ModelFormatError, RopeScaling
from tinyfast.models.base import ModelOptions
from tinyfast.models.registry import hf_architecture

_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                "gelu_tanh": "gelu_tanh", "gelu": "gelu"}


def _text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Gemma3ForConditionalGeneration keeps the language model's fields in ``text_config``."""
    out = dict(config)
    if isinstance(config.get("text_config"), Mapping):
        out.update(config["text_config"])
    return out


def _rope_params(d: Mapping[str, Any] | None, dims: int, base: float, max_pos: int) -> RopeParams:
    """RopeParams from an HF rope dict (``rope_scaling`` or ``rope_parameters``)."""
    d = dict(d or {})
    kind = d.get("rope_type", d.get("type", "default")) or "default"
    base = float(d.get("rope_theta", base))
    if kind == "default":
        return RopeParams(dims=dims, base=base)
    factor = float(d.get("factor", 1.0))
    original = d.get("original_max_position_embeddings")
    if kind == "yarn":
        # transformers derives the factor from the two context lengths when both are given.
        if original is None:
            original = max_pos
        return RopeParams(dims=dims, base=base, type="yarn", factor=factor,
                          original_max_position_embeddings=int(original),
                          beta_fast=float(d.get("beta_fast") or 32.0), beta_slow=float(d.get("beta_slow") or 1.0),
                          attention_factor=d.get("attention_factor"), mscale=d.get("mscale"),
                          mscale_all_dim=d.get("mscale_all_dim"), truncate=bool(d.get("truncate", True)))
    if kind == "llama3":
        return RopeParams(dims=dims, base=base, type="llama3", factor=factor,
                          original_max_position_embeddings=int(original),
                          low_freq_factor=float(d.get("low_freq_factor", 1.0)),
                          high_freq_factor=float(d.get("high_freq_factor", 4.0)))
    if kind == "linear":
        return RopeParams(dims=dims, base=base, type="linear", factor=factor)
    raise ModelFormatError(f"unsupported rope scaling {kind!r} (default, linear, llama3, yarn)")


def _summary(p: RopeParams) -> RopeScaling | None:
    if p.type == "default":
        return None
    return RopeScaling(p.type, p.factor, p.original_max_position_embeddings)


def _sliding_layers(t: Mapping[str, Any], arch: str, n_layers: int) -> tuple[tuple[bool, ...], int | None]:
    types = t.get("layer_types")
    if types:
        if len(types) != n_layers:
            raise ModelFormatError(f"config.json: layer_types has {len(types)} entries for {n_layers} layers")
        return tuple(x == "sliding_attention" for x in types), None
    if t.get("sliding_window") is None:
        return (False,) * n_layers, None
    if arch == "gemma3":
        pattern = int(t.get("sliding_window_pattern", t.get("_sliding_window_pattern", 6)))
        return tuple((i + 1) % pattern != 0 for i in range(n_layers)), pattern
    if arch in ("qwen2", "qwen3"):
        if not t.get("use_sliding_window", False):
            return (False,) * n_layers, None
        first = int(t.get("max_window_layers", n_layers))
        return tuple(i >= first for i in range(n_layers)), None
    return (True,) * n_layers, None  # Mistral: every layer


def hf_model_config(config: Mapping[str, Any]) -> tuple[ModelConfig, ModelOptions]:
    """(ModelConfig, ModelOptions) from a HuggingFace config.json mapping."""
    arch = hf_architecture(config)
    t = _text_config(config)
    try:
        n_layers, hidden = int(t["num_hidden_layers"]), int(t["hidden_size"])
        n_heads, vocab = int(t["num_attention_heads"]), int(t["vocab_size"])
        intermediate = int(t["intermediate_size"])
    except KeyError as e:
        raise ModelFormatError(f"config.json: missing required key {e.args[0]!r}") from None
    n_kv = int(t.get("num_key_value_heads") or n_heads)
    head_dim = int(t.get("head_dim") or (256 if arch == "gemma3" else hidden // n_heads))
    rp = t.get("rope_parameters")
    prf = t.get("partial_rotary_factor") or (rp.get("partial_rotary_factor") if isinstance(rp, Mapping) else None)
    rope_dim = int(head_dim * float(prf or 1.0))
    max_pos = int(t.get("max_position_embeddings", 2048))
    gemma = arch == "gemma3"

    if isinstance(rp, Mapping) and gemma and "full_attention" in rp:
        rope = _rope_params(rp["full_attention"], rope_dim, 1e6, max_pos)
        rope_local = _rope_params(rp.get("sliding_attention"), rope_dim, 10000.0, max_pos)
    elif isinstance(rp, Mapping):
        rope = _rope_params(rp, rope_dim, 10000.0, max_pos)
        rope_local = None
    else:
        theta = float(t.get("rope_theta", 1e6 if gemma else 10000.0))
        rope = _rope_params(t.get("rope_scaling"), rope_dim, theta, max_pos)
        rope_local = RopeParams(dims=rope_dim, base=float(t.get("rope_local_base_freq", 10000.0))) if gemma else None

    sliding_layers, pattern = _sliding_layers(t, arch, n_layers)
    window = t.get("sliding_window") if any(sliding_layers) else None
    act = t.get("hidden_activation") or t.get("hidden_act") or ("gelu_pytorch_tanh" if gemma else "silu")
    if act not in _ACTIVATIONS:
        raise ModelFormatError(f"config.json: unsupported activation {act!r}")
    scale = float(t["query_pre_attn_scalar"]) ** -0.5 if gemma and t.get("query_pre_attn_scalar") else None

    cfg = ModelConfig(
        architecture=arch, n_layers=n_layers, hidden=hidden, intermediate=intermediate, n_heads=n_heads,
        n_kv_heads=n_kv, head_dim=head_dim, v_head_dim=head_dim, vocab_size=vocab, context_length=max_pos,
        rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)), rope_theta=rope.base, rope_dim=rope_dim,
        rope_scaling=_summary(rope), tie_word_embeddings=bool(t.get("tie_word_embeddings", gemma)),
        sliding_window=int(window) if window else None, sliding_window_pattern=pattern,
        sliding_layers=sliding_layers, rope_local_theta=rope_local.base if rope_local else None,
    )
    opts = ModelOptions(rope=rope, rope_local=rope_local, attn_scale=scale, hidden_act=_ACTIVATIONS[act],
                        attn_logit_softcap=t.get("attn_logit_softcapping"),
                        final_logit_softcap=t.get("final_logit_softcapping"))
    return cfg, opts


def gguf_model_options(g: GGUFFile, cfg: ModelConfig) -> ModelOptions:
    """ModelOptions from a GGUF file, following llama.cpp's graph for each architecture."""
    arch, md = cfg.architecture, g.metadata
    freq_factors = None
    if "rope_freqs.weight" in g.tensors:  # llama3-style scaling baked into per-pair divisors
        freq_factors = tuple(float(x) for x in np.asarray(g.tensor_array("rope_freqs.weight"), dtype=np.float64))
    # llama.cpp's converter permutes llama's Q/K rows for interleaved (GPT-J) rope; the others use NeoX rope.
    traditional = arch == "llama"
    s = cfg.rope_scaling
    common = dict(dims=cfg.rope_dim, base=cfg.rope_theta, traditional=traditional, freq_factors=freq_factors)
    if s is None or s.type in ("none", "default"):
        rope = RopeParams(**common)
    elif s.type == "linear":
        rope = RopeParams(type="linear", factor=s.factor, **common)
    elif s.type == "yarn":
        attn_factor = md.get(f"{arch}.rope.scaling.attn_factor")
        rope = RopeParams(type="yarn", factor=s.factor,
                          original_max_position_embeddings=s.original_context_length or cfg.context_length,
                          beta_fast=float(md.get(f"{arch}.rope.scaling.yarn_beta_fast", 32.0)),
                          beta_slow=float(md.get(f"{arch}.rope.scaling.yarn_beta_slow", 1.0)),
                          attention_factor=float(attn_factor) if attn_factor else None, **common)
    else:
        raise ModelFormatError(f"GGUF: unsupported rope scaling type {s.type!r}")
    rope_local = scale = None
    act = "silu"
    if arch == "gemma3":
        rope_local = RopeParams(dims=cfg.rope_dim, base=cfg.rope_local_theta or 10000.0)
        # llama.cpp: 1/sqrt(head_dim), except Gemma 3 27B (62 layers) which uses hidden / n_heads.
        scale = (cfg.hidden / cfg.n_heads) ** -0.5 if cfg.n_layers == 62 else cfg.head_dim ** -0.5
        act = "gelu_tanh"

    def cap(key: str) -> float | None:
        v = md.get(f"{arch}.{key}")
        return float(v) if v else None

    return ModelOptions(rope=rope, rope_local=rope_local, attn_scale=scale, hidden_act=act,
                        attn_logit_softcap=cap("attn_logit_softcapping"),
                        final_logit_softcap=cap("final_logit_softcapping"))
