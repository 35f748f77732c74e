"""Gemma 3 (text): QK norm, norms before and after attention and MLP, GeGLU (gelu-tanh),
embeddings scaled by sqrt(hidden), sliding-window layers with their own rope base,
optional final logit softcap.

Norm weights are used as stored in GGUF, where llama.cpp's converter already
added Gemma's ``1 +``; the loader adds it to HuggingFace checkpoints.
"""

from __future__ import annotations

import math

import mlx.core as mx

from tinyfast.layers import AttentionMetadata
from tinyfast.loaders import ModelConfig
from tinyfast.models.base import MLP, Attention, CausalLM, KVCache, ModelOptions, Weights, norm


class Gemma3Block:
    def __init__(self, w: Weights, layer: int, config: ModelConfig, options: ModelOptions):
        p, eps = f"blk.{layer}.", config.rms_norm_eps
        self.attn_norm = norm(w, p + "attn_norm", eps)
        self.attn = Attention(w, layer, config, options)
        self.post_attn_norm = norm(w, p + "post_attention_norm", eps)
        self.ffn_norm = norm(w, p + "ffn_norm", eps)
        self.mlp = MLP(w, layer, options.hidden_act)
        self.post_ffn_norm = norm(w, p + "post_ffw_norm", eps)

    def __call__(self, x: mx.array, positions: mx.array, cache: KVCache,
                 meta: AttentionMetadata) -> tuple[mx.array, KVCache]:
        a, cache = self.attn(self.attn_norm(x), positions, cache, meta)
        h = x + self.post_attn_norm(a)
        return h + self.post_ffn_norm(self.mlp(self.ffn_norm(h))), cache


class Gemma3Model(CausalLM):
    def __init__(self, config: ModelConfig, options: ModelOptions, weights: Weights):
        # HF multiplies by sqrt(hidden) rounded to the activation dtype (float32 here).
        self.embed_scale = float(mx.array(math.sqrt(config.hidden), dtype=mx.float32).item())
        super().__init__(config, options, weights, Gemma3Block)
