"""Memory a model instance will need, from its metadata alone (no tensor is read).

weights at the load dtype (or the bitsandbytes size) + the paged KV cache for the instance's
token budget + an activation margin for one step (hidden states of the step's tokens and the
last-token logits of every running sequence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# "packed": GGUF blocks repacked by backends/quant, as measured on gemma3:270m Q4_K_M (its tied
# 262k-row embedding is held twice: int8 rows for the gather, int4 pairs for the LM head; and
# its 5- and 8-bit layers twice: int4x2 for decode rows, int8 for batch rows).
BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "nf4": 0.55, "int8": 1.05,
                   "packed": 2.0}
FIXED_OVERHEAD = 64 * 1024**2


@dataclass(frozen=True)
class ModelShape:
    parameter_count: int
    block_count: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int

    @classmethod
    def from_kv(cls, architecture: str, kv: Mapping[str, Any], parameter_count: int) -> "ModelShape":
        """From GGUF-style metadata keys (`<arch>.block_count`, `<arch>.attention.*`)."""

        def get(key: str, default: int = 0) -> int:
            value = kv.get(f"{architecture}.{key}", default)
            return int(value) if isinstance(value, (int, float)) else default

        hidden = get("embedding_length", 0)
        heads = get("attention.head_count", 1) or 1
        kv_heads = get("attention.head_count_kv", heads) or heads
        head_dim = get("attention.key_length", hidden // heads if hidden else 0)
        tokens = kv.get("tokenizer.ggml.tokens")
        vocab = get("vocab_size", 0) or (len(tokens) if hasattr(tokens, "__len__") else 0)
        return cls(parameter_count, get("block_count", 0), kv_heads, head_dim, hidden, vocab)

    def kv_bytes_per_token(self, dtype_bytes: float) -> int:
        return int(2 * self.block_count * self.kv_heads * self.head_dim * dtype_bytes)


def estimate_bytes(
    shape: ModelShape,
    weights_dtype: str,
    kv_tokens: int,
    kv_dtype_bytes: float,
    step_tokens: int,
    max_seqs: int,
) -> int:
    weights = shape.parameter_count * BYTES_PER_PARAM[weights_dtype]
    kv = kv_tokens * shape.kv_bytes_per_token(kv_dtype_bytes)
    activations = step_tokens * shape.hidden * 16 * kv_dtype_bytes + max_seqs * shape.vocab * 4
    return int(weights + kv + activations + FIXED_OVERHEAD)
