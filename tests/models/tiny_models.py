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
