"""Drop-in modules over packed weights: `PackedLinear` for nn.Linear, `PackedEmbedding` for
nn.Embedding (a gather over int8 rows that dequantizes only the rows it gathers). A tied LM head
is a PackedLinear over the embedding's own tensors: one packed copy serves both."""

from __future__ import annotations

import torch
from torch import nn

from backends.quant.kernels import DECODE_ROWS, KERNELS, KernelTable, runtime_tensors


class PackedLinear(nn.Module):
    def __init__(self, fmt: str, in_features: int, out_features: int,
                 stored: dict[str, torch.Tensor], table: KernelTable,
                 bias: torch.Tensor | None = None, exact: bool = False):
        super().__init__()
        self.fmt, self.in_features, self.out_features = fmt, in_features, out_features
        # What the kernels read; the portable int4 nibbles are dropped once packed for this CPU.
        self.w = runtime_tensors(fmt, stored)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.kernels = table.choose(fmt, out_features, in_features, exact=exact)
        self.stored = {} if "int4pack" in self.w else stored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        kernel = self.kernels["decode" if rows.shape[0] <= DECODE_ROWS else "batch"]
        out = KERNELS[kernel](rows, self.w)
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}->{self.out_features}, {self.fmt}, kernels={self.kernels}"


class PackedEmbedding(nn.Module):
    def __init__(self, stored: dict[str, torch.Tensor], dtype: torch.dtype,
                 padding_idx: int | None = None, embed_scale: float = 1.0):
        super().__init__()
        self.stored = stored  # {"qweight": int8 [V, D], "qscale": float32 [V]}
        self.num_embeddings, self.embedding_dim = stored["qweight"].shape
        self.dtype, self.padding_idx, self.embed_scale = dtype, padding_idx, float(embed_scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.stored["qweight"][ids].to(torch.float32)
        rows = rows * (self.stored["qscale"][ids] * self.embed_scale).unsqueeze(-1)
        return rows.to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"


def packed_nbytes(model: nn.Module) -> int:
    """Bytes of the packed tensors and float parameters, each shared tensor counted once."""
    seen: dict[int, int] = {}
    for module in model.modules():
        for t in [*getattr(module, "stored", {}).values(), *getattr(module, "w", {}).values()]:
            seen[t.data_ptr()] = t.numel() * t.element_size()
    for p in list(model.parameters()) + list(model.buffers()):
        seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())
