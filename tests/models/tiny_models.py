"""Tiny random HuggingFace models (transformers configs) saved as safetensors, plus references.

Every parameter gets seeded noise on top of HF's init so norms (Gemma's ``1 + w``
included), biases and the QK norms all matter to the output.
"""

from __future__ import annotations

import numpy as np

torch = None
transformers = None


def _imports():
    global torch, transformers
    import torch as _torch
    import transformers as _transformers

    torch, transformers = _torch, _transformers


COMMON = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)


def configs():
    _imports()
    t = transformers
    return {
        # llama3 rope scaling exercises the frequency code; untied LM head.
        "llama": t.LlamaConfig(**COMMON, tie_word_embeddings=False, rope_scaling=dict(
            rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=32), rope_theta=10000.0),
        # Qwen2: QKV bias, tied embeddings, MQA-ish GQA ratio 4.
        "qwen2": t.Qwen2Config(**{**COMMON, "num_key_value_heads": 1}, tie_word_embeddings=True,
                               rope_theta=1e6),
        # Qwen3: head_dim != hidden / heads, QK norm.
        "qwen3": t.Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=False, rope_theta=1e6),
        # Gemma 3: sliding window 8 on layer 0, global layer 1, softcap on the final logits.
        "gemma3": t.Gemma3TextConfig(**COMMON, head_dim=32, query_pre_attn_scalar=24, sliding_window=8,
                                     layer_types=["sliding_attention", "full_attention"],
                                     final_logit_softcapping=30.0,
                                     rope_parameters={"sliding_attention": {"rope_type": "default",
                                                                            "rope_theta": 10000.0},
                                                      "full_attention": {"rope_type": "default",
                                                                         "rope_theta": 1e6}}),
        # Mistral: every layer sliding (window 8).
        "mistral": t.MistralConfig(**COMMON, sliding_window=8, tie_word_embeddings=False, head_dim=16),
    }


def build(name: str, seed: int = 0):
    """A random HF model (float32, eager attention) for ``configs()[name]``."""
    _imports()
    cfg = configs()[name]
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    cls = transformers.Gemma3ForCausalLM if name == "gemma3" else transformers.AutoModelForCausalLM
    model = cls.from_config(cfg) if cls is transformers.AutoModelForCausalLM else cls(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.08 * torch.randn(p.shape, generator=g))
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def save(model, path) -> str:
    model.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def hf_logits(model, token_ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([list(token_ids)])).logits[0].float().numpy()


def hf_generate(model, token_ids, n: int) -> tuple[list[int], np.ndarray]:
    """Greedy tokens of ``model.generate(do_sample=False)`` and the logits of each step."""
    with torch.no_grad():
        out = model.generate(torch.tensor([list(token_ids)]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(token_ids):].tolist()
    return tokens, torch.stack(out.logits, 1)[0].float().numpy()


def random_prompts(rng: np.random.Generator, vocab: int, lengths, shared_prefix: int = 0):
    prefix = list(rng.integers(3, vocab, shared_prefix))
    return [prefix + list(rng.integers(3, vocab, n - shared_prefix)) if n >= shared_prefix
            else list(rng.integers(3, vocab, n)) for n in lengths]


# ------------------------------------------------------------------ GGUF (llama.cpp converter conventions)

_GGUF_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute (rows into interleaved-rope order)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_rope_factors(cfg) -> np.ndarray:
    """The rope_freqs.weight llama.cpp writes for llama3 rope scaling."""
    import math

    rs = cfg.rope_parameters
    base, dim = rs["rope_theta"], cfg.head_dim
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(model, path, arch: str, quant: str | None = None) -> str:
    """The HF model as a GGUF file the way llama.cpp's converter writes it (no tokenizer).

    ``quant="q8_0"``/``"q4_0"``...: 2-D weights quantized with gguf-py; norms and biases stay F32.
    """
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_vocab_size(cfg.vocab_size)
    qtype = getattr(gguf.GGMLQuantizationType, quant.upper()) if quant else None

    def add(name, t):
        a = t.detach().float().numpy()
        if qtype is not None and a.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a.astype(np.float32))

    if arch == "llama" and cfg.rope_parameters.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", _llama3_rope_factors(cfg))
    sd = model.state_dict()
    for name, t in sd.items():
        if name == "model.embed_tokens.weight":
            add("token_embd.weight", t)
        elif name == "model.norm.weight":
            add("output_norm.weight", t)
        elif name == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                add("output.weight", t)
        else:
            parts = name.split(".")
            layer, module, suffix = parts[2], ".".join(parts[3:-1]), parts[-1]
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = cfg.num_attention_heads if module == "self_attn.q_proj" else cfg.num_key_value_heads
                t = torch.from_numpy(_permute(t.detach().float().numpy(), heads))
            add(f"blk.{layer}.{_GGUF_LAYER[module]}.{suffix}", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# ------------------------------------------------------------------ mlx-community affine layout


def write_affine(model, path, bits: int = 4, group_size: int = 32) -> str:
    """The HF model in mlx-community's layout: Linear and embedding weights as (uint32 codes,
    scales, biases) from ``mx.quantize``, "quantization" in config.json."""
    import json
    from pathlib import Path

    import mlx.core as mx

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, t in model.state_dict().items():
        a = mx.array(t.detach().float().numpy())
        if a.ndim == 2 and name.endswith(".weight") and not (name == "lm_head.weight" and
                                                               model.config.tie_word_embeddings):
            codes, scales, biases = mx.quantize(a, group_size=group_size, bits=bits)
            base = name[: -len(".weight")]
            out[name], out[base + ".scales"], out[base + ".biases"] = codes, scales, biases
        elif not (name == "lm_head.weight" and model.config.tie_word_embeddings):
            out[name] = a
    mx.save_safetensors(str(path / "model.safetensors"), out, metadata={"format": "mlx"})
    config = model.config.to_dict()
    config["quantization"] = {"group_size": group_size, "bits": bits}
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def dequantized_reference(model, fmt: str = "affine4", group_size: int = 32):
    """A copy of the HF model whose 2-D weights are replaced by their quantization round trip
    (``affine4``/``affine8`` via mx.quantize, or a GGUF type such as ``q8_0`` via gguf-py)."""
    import copy

    import mlx.core as mx

    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim != 2:
                continue
            a = p.detach().float().numpy()
            if fmt.startswith("affine"):
                bits = int(fmt[6:])
                q = mx.quantize(mx.array(a), group_size=group_size, bits=bits)
                r = np.array(mx.dequantize(*q, group_size=group_size, bits=bits))
            else:
                import gguf

                qt = getattr(gguf.GGMLQuantizationType, fmt.upper())
                r = gguf.quants.dequantize(gguf.quants.quantize(a, qt), qt).reshape(a.shape)
            p.copy_(torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32)))
    return ref
