"""Model building blocks shared by every family: norms, rope, linear, embedding, paged attention."""

from tinyfast.layers.attention import AttentionMetadata, PagedAttention
from tinyfast.layers.embedding import Embedding, embedding_lookup
from tinyfast.layers.linear import Linear
from tinyfast.layers.norm import RMSNorm
from tinyfast.layers.rotary import RopeParams, RotaryEmbedding, inv_frequencies

__all__ = [
    "AttentionMetadata",
    "Embedding",
    "Linear",
    "PagedAttention",
    "RMSNorm",
    "RopeParams",
    "RotaryEmbedding",
    "embedding_lookup",
    "inv_frequencies",
]
