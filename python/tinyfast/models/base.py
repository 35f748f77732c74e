"""Pieces every model family shares: options, the weight store, attention, MLP, the forward loop.

A model sees one flat ("ragged") batch per step: ``token_ids [T]``,
``positions [T]`` and the paged-attention metadata; it does not know about
scheduling. Weights are named as in GGUF files (``blk.3.attn_q.weight``); the
loader renames HuggingFace checkpoints to those names (``weights.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import mlx.core as mx

from tinyfast.layers import AttentionMetadata, Embedding, Linear, PagedAttention, RMSNorm, RopeParams, RotaryEmbedding
from tinyfast.loaders import ModelConfig, ModelFormatError
from tinyfast.ops import QuantizedWeight, gated_act
from tinyfast.ops.layers import GATED_ACTS

Tensor = mx.array | QuantizedWeight
KVCache = tuple[mx.array, mx.array]


@dataclass(frozen=True)
class ModelOptions:
    """What a family needs beyond :class:`ModelConfig`; filled by the loader from
    config.json or GGUF metadata."""

    rope: RopeParams
    """Rotation of the global (full-attention) layers."""
    rope_local: RopeParams | None = None
    """Rotation of the sliding-window layers when it differs (Gemma 3: base 10000, no scaling)."""
    attn_scale: float | None = None
    """Softmax scale; None: head_dim ** -0.5."""
    hidden_act: str = "silu"
    """``silu``, ``gelu_tanh`` or ``gelu``."""
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None


class Weights:
    """Name -> dense ``mx.array`` or :class:`QuantizedWeight`, with GGUF tensor names.

    Models take what they need (``get`` / ``maybe``); ``warn_unused`` reports the rest.
    """

    def __init__(self, tensors: dict[str, Tensor], source: str):
        self.tensors = tensors
        self.source = source
        self._used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> Tensor:
        try:
            t = self.tensors[name]
        except KeyError:
            raise ModelFormatError(f"{self.source}: missing tensor {name!r}") from None
        self._used.add(name)
        return t

    def maybe(self, name: str) -> Tensor | None:
        return self.get(name) if name in self.tensors else None

    def vector(self, name: str) -> mx.array:
        t = self.get(name)
        if isinstance(t, QuantizedWeight):
            raise ModelFormatError(f"{self.source}: tensor {name!r} must not be quantized")
        return t

    def materialize(self, bar=None) -> None:
        """Evaluates load-time conversions (widened or shifted tensors) now, not at the first step.

        ``bar`` (a tqdm-like object) advances by one per tensor; without it, one ``mx.eval``."""
        groups = [t.arrays if isinstance(t, QuantizedWeight) else [t] for t in self.tensors.values()]
        if bar is None:
            mx.eval([a for g in groups for a in g])
            return
        for g in groups:
            mx.eval(g)
            bar.update(1)

    def warn_unused(self) -> None:
        unused = sorted(set(self.tensors) - self._used)
        if unused:
            more = f" (+{len(unused) - 5} more)" if len(unused) > 5 else ""
            warnings.warn(f"{self.source}: {len(unused)} tensors not used by the model: {unused[:5]}{more}",
                          stacklevel=3)


def linear(w: Weights, name: str) -> Linear:
    return Linear(w.get(f"{name}.weight"), w.maybe(f"{name}.bias"))


def norm(w: Weights, name: str, eps: float) -> RMSNorm:
    return RMSNorm(w.vector(f"{name}.weight"), eps)


_ROPES: dict[RopeParams, RotaryEmbedding] = {}


def rotary(params: RopeParams) -> RotaryEmbedding:
    """One RotaryEmbedding per distinct parameter set, shared by layers and models."""
    r = _ROPES.get(params)
    if r is None:
        r = _ROPES[params] = RotaryEmbedding(params)
    return r


class Attention:
    """Q/K/V projections (+ bias), optional per-head QK RMSNorm, rope, paged attention, output projection."""

    def __init__(self, w: Weights, layer: int, config: ModelConfig, options: ModelOptions):
        p = f"blk.{layer}."
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.q_proj, self.k_proj = linear(w, p + "attn_q"), linear(w, p + "attn_k")
        self.v_proj, self.o_proj = linear(w, p + "attn_v"), linear(w, p + "attn_output")
        has_qk_norm = f"{p}attn_q_norm.weight" in w
        self.q_norm = norm(w, p + "attn_q_norm", config.rms_norm_eps) if has_qk_norm else None
        self.k_norm = norm(w, p + "attn_k_norm", config.rms_norm_eps) if has_qk_norm else None
        sliding = config.sliding_layers[layer]
        self.rope = rotary(options.rope_local if sliding and options.rope_local is not None else options.rope)
        scale = options.attn_scale if options.attn_scale is not None else config.head_dim ** -0.5
        self.attn = PagedAttention(config.n_heads, config.n_kv_heads, config.head_dim, scale,
                                   config.sliding_window if sliding else None, options.attn_logit_softcap)

    def __call__(self, x: mx.array, positions: mx.array, cache: KVCache,
                 meta: AttentionMetadata) -> tuple[mx.array, KVCache]:
        t = x.shape[0]
        q = self.q_proj(x).reshape(t, self.n_heads, self.head_dim)
        k = self.k_proj(x).reshape(t, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rope(q, positions), self.rope(k, positions)
        o, cache = self.attn(q, k, v, cache, meta)
        return self.o_proj(o), cache


class MLP:
    """Gated MLP: ``down(act(gate(x)) * up(x))`` (SwiGLU for Llama/Qwen, GeGLU for Gemma)."""

    def __init__(self, w: Weights, layer: int, act: str):
        p = f"blk.{layer}."
        self.gate, self.up, self.down = linear(w, p + "ffn_gate"), linear(w, p + "ffn_up"), linear(w, p + "ffn_down")
        if act not in GATED_ACTS:
            raise ModelFormatError(f"unsupported activation {act!r} ({', '.join(GATED_ACTS)})")
        self.act = act

    def __call__(self, x: mx.array) -> mx.array:
        return self.down(gated_act(self.gate(x), self.up(x), self.act))


class CausalLM:
    """The forward loop every family shares; a family supplies its blocks and the embedding scale."""

    embed_scale: float | None = None

    def __init__(self, config: ModelConfig, options: ModelOptions, w: Weights, block):
        self.config, self.options = config, options
        self.embed = Embedding(w.get("token_embd.weight"))
        self.layers = [block(w, i, config, options) for i in range(config.n_layers)]
        self.norm = norm(w, "output_norm", config.rms_norm_eps)
        head = w.maybe("output.weight")
        self.lm_head = self.embed.as_linear if head is None else Linear(head)
        if tuple(self.embed.shape) != (config.vocab_size, config.hidden):
            raise ModelFormatError(f"{w.source}: token embedding has shape {tuple(self.embed.shape)}, expected "
                                   f"{(config.vocab_size, config.hidden)}")
        w.warn_unused()

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def __call__(self, token_ids: mx.array, positions: mx.array, meta: AttentionMetadata,
                 caches: list[KVCache], logits_indices: mx.array | None = None) -> tuple[mx.array, list[KVCache]]:
        """Float32 logits at ``logits_indices`` (all tokens when None) and the written KV pools.

        The pools are written in place; evaluate the returned ones (or the logits,
        which depend on every layer) in the same ``mx.eval`` as the logits.
        """
        h, written = self.hidden_states(token_ids, positions, meta, caches)
        if logits_indices is not None:
            h = mx.take(h, logits_indices, axis=0)
        return self.logits(h), written

    def hidden_states(self, token_ids: mx.array, positions: mx.array, meta: AttentionMetadata,
                      caches: list[KVCache], after_layer=None) -> tuple[mx.array, list[KVCache]]:
        """The last block's output for every token (before the final norm) and the written pools.

        Split from :meth:`logits` so a caller can turn only some rows into logits, in slices
        (prompt logprobs: a [T, vocab] float32 array is 1 MB per token at a 262k vocabulary).
        ``after_layer(h, cache)``, if given, is called after each block is built (eager calls:
        the model runner evaluates there on long prefills, see ``ModelRunner``).
        """
        h = self.embed(token_ids)
        if self.embed_scale is not None:
            h = h * self.embed_scale
        written = []
        for layer, cache in zip(self.layers, caches):
            h, cache = layer(h, positions, cache, meta)
            written.append(cache)
            if after_layer is not None:
                after_layer(h, cache)
        return h, written

    def logits(self, h: mx.array) -> mx.array:
        """Float32 logits of hidden states ``[N, hidden]`` (final norm, LM head, softcap: all row-wise)."""
        logits = self.lm_head(self.norm(h))
        cap = self.options.final_logit_softcap
        if cap:
            logits = mx.tanh(logits / cap) * cap
        return logits.astype(mx.float32)
