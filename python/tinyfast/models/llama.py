"""Llama 2/3, Mistral, Qwen2/2.5 (QKV bias) and Qwen3 (QK norm): pre-norm blocks, SwiGLU.

The variants differ only in which tensors exist (biases, ``attn_q_norm``) and in
config values, which ``Attention`` and the loader pick up.
"""

from __future__ import annotations

import mlx.core as mx

from tinyfast.layers import AttentionMetadata
from tinyfast.loaders import ModelConfig
from tinyfast.models.base import MLP, Attention, CausalLM, KVCache, ModelOptions, Weights, norm


class LlamaBlock:
    def __init__(self, w: Weights, layer: int, config: ModelConfig, options: ModelOptions):
        p, eps = f"blk.{layer}.", config.rms_norm_eps
        self.attn_norm = norm(w, p + "attn_norm", eps)
        self.attn = Attention(w, layer, config, options)
        self.ffn_norm = norm(w, p + "ffn_norm", eps)
        self.mlp = MLP(w, layer, options.hidden_act)

    def __call__(self, x: mx.array, positions: mx.array, cache: KVCache,
                 meta: AttentionMetadata) -> tuple[mx.array, KVCache]:
        a, cache = self.attn(self.attn_norm(x), positions, cache, meta)
        h = x + a
        return h + self.mlp(self.ffn_norm(h)), cache


class LlamaModel(CausalLM):
    def __init__(self, config: ModelConfig, options: ModelOptions, weights: Weights):
        super().__init__(config, options, weights, LlamaBlock)
