"""Drop-in modules over packed weights: `PackedLinear` for nn.Linear, `PackedEmbedding` for
nn.Embedding (a gather that dequantizes only the rows it gathers), and `ShortlistHead` for a
tied LM head over an embedding kept as int8 rows with residuals. One copy of the embedding's
rows serves the embedding and its tied head."""

from __future__ import annotations

import torch
from torch import nn

from backends.quant.kernels import DECODE_ROWS, KERNELS, READS, KernelTable, runtime_tensors
from backends.quant.pack import RESIDUAL_STEPS


class PackedLinear(nn.Module):
    def __init__(self, fmt: str, in_features: int, out_features: int,
                 stored: dict[str, torch.Tensor], table: KernelTable,
                 bias: torch.Tensor | None = None):
        super().__init__()
        self.fmt, self.in_features, self.out_features = fmt, in_features, out_features
        self.kernels = table.choose(fmt, out_features, in_features)
        # What the kernels read; the portable int4 nibbles are dropped once packed for this CPU.
        # An int4x2 weight was packed in two forms, of which its kernels may read only one.
        reads = {key for kernel in self.kernels.values() for key in READS[kernel]}
        self.w = runtime_tensors(fmt, stored, reads if fmt == "int4x2" else None)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        # What else reads the weight (a tied embedding, LoRA); an aligned copy replaces the
        # mapped original, so the two are not both kept resident.
        self.stored = {} if "int4pack" in self.w else {"qweight": self.w["qweight"],
                                                       "qscale": stored["qscale"]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        kernel = self.kernels["decode" if rows.shape[0] <= DECODE_ROWS else "batch"]
        out = KERNELS[kernel](rows, self.w)
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}->{self.out_features}, {self.fmt}, kernels={self.kernels}"


class FusedProjections(PackedLinear):
    """Sibling projections of one input (attention's q/k/v, the MLP's gate/up), packed as one
    layer (gguf_model.fuse_siblings): one kernel call and one activation cast where there were
    several. Each sibling keeps its place in the model as a ProjectionSlice; the first one
    called with an input runs the fused layer, and each takes its own columns of that output."""

    def __init__(self, fmt: str, in_features: int, sizes: list[int],
                 stored: dict[str, torch.Tensor], table: KernelTable,
                 bias: torch.Tensor | None = None):
        super().__init__(fmt, in_features, sum(sizes), stored, table, bias)
        self.sizes = sizes
        self._input: torch.Tensor | None = None
        self._parts: tuple[torch.Tensor, ...] = ()
        self._pending = 0

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if x is not self._input:  # held until every sibling has taken its part: no id reuse
            self._parts = self(x).split(self.sizes, -1)
            self._input, self._pending = x, len(self.sizes)
        out = self._parts[index]
        self._pending -= 1
        if self._pending == 0:
            self._input, self._parts = None, ()
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parts={self.sizes}"


class ProjectionSlice(nn.Module):
    """One sibling's columns of a FusedProjections output, under the sibling's own name."""

    def __init__(self, group: FusedProjections, index: int):
        super().__init__()
        object.__setattr__(self, "group", group)  # registered once, on the parent
        self.index = index
        self.in_features, self.out_features = group.in_features, group.sizes[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.part(x, self.index)

    def extra_repr(self) -> str:
        return f"{self.in_features}->{self.out_features}, part {self.index} of a fused layer"


# Rows the shortlist head rescores exactly. At each of 512 positions of gemma3:270m the exact
# argmax was within either approximation's top 64; the top 64 held 96.6% of the exact top 40
# by the int4 pass, all of them by the int8 one.
SHORTLIST = 64
# Of those, the best by their int8 rows are scored with their residuals too: the exact argmax
# was within the int8 rows' top 2 at each of the 512 positions. The residuals are mapped from
# the cache file and each row read maps the 64 KiB around it, so residuals read for 8 rather
# than 64 rows per sequence and step keep an eighth as many of their pages resident.
RESIDUAL_SHORTLIST = 8


def gather_rows(stored: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """float32 [*ids.shape, K]: rows `ids` of a weight kept as blocks (pack.block_tensors), as
    per-row int8 (pack.int8_tensors) or as that with residuals (pack.int8_residual_tensors),
    dequantized; only these rows are touched."""
    if "codes" not in stored:
        q = stored["qweight"][ids].to(torch.float32)
        scale = stored["qscale"][ids].unsqueeze(-1)
        if "residual" not in stored:
            return q * scale
        packed = stored["residual"][ids]  # in RESIDUAL_STEPS-ths of a step, offset by 8
        residual = torch.stack([packed & 15, packed >> 4], -1).view(q.shape)
        return q.mul_(RESIDUAL_STEPS).add_(residual).sub_(8).mul_(scale / RESIDUAL_STEPS)
    groups = stored["scale"].shape[-1]
    codes = stored["codes"][ids].view(*ids.shape, groups, -1).to(torch.float32)
    scale, offset = (stored[k][ids].float().unsqueeze(-1) for k in ("scale", "offset"))
    return (codes * scale + offset).flatten(-2)


def top_indices(x: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """The indices of each row's k largest values (unordered), as `x.topk(k)` finds them, at a
    third of its cost on a 262k-wide row: only the k chunks with the largest maxima can hold
    them (each of the k values lifts its own chunk's maximum to at least the k-th value), so
    one topk runs over the chunks' maxima and one over those k chunks."""
    rows, width = x.shape
    if width % chunk or width // chunk <= k:
        return x.topk(k, -1, sorted=False).indices
    chunks = x.view(rows, width // chunk, chunk)
    best = chunks.amax(-1).topk(k, -1, sorted=False).indices  # [B, k] chunk numbers
    held = chunks.gather(1, best.unsqueeze(-1).expand(rows, k, chunk)).view(rows, k * chunk)
    top = held.topk(k, -1, sorted=False).indices
    return best.gather(1, top // chunk) * chunk + top % chunk


class PackedEmbedding(nn.Module):
    def __init__(self, stored: dict[str, torch.Tensor], dtype: torch.dtype,
                 padding_idx: int | None = None, embed_scale: float = 1.0):
        super().__init__()
        self.stored = stored  # block_tensors or int8_tensors of the [V, D] weight
        self.num_embeddings, self.embedding_dim = stored.get("codes", stored.get("qweight")).shape
        self.dtype, self.padding_idx, self.embed_scale = dtype, padding_idx, float(embed_scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (gather_rows(self.stored, ids) * self.embed_scale).to(self.dtype)

    def extra_repr(self) -> str:
        kind = ("blocks" if "codes" in self.stored else
                "int8 rows + residuals" if "residual" in self.stored else "int8 rows")
        return f"{self.num_embeddings}, {self.embedding_dim}, {kind}"


class ShortlistHead(PackedLinear):
    """A tied LM head over an embedding kept as int8 rows with residuals
    (pack.int8_residual_tensors), fmt "rescored". Every token is scored approximately, then
    each row's best SHORTLIST are rescored in float32 from the embedding's int8 rows, and the
    best RESIDUAL_SHORTLIST of those from the rows with their residuals, so the tokens that can
    be picked carry (near-)exact logits and the rest approximate ones. The approximate pass is
    the kernel table's choice per bucket: at decode rows the int4 kernel over the codes' top 4
    bits (its own copy, blocks.top_nibbles: the fewest bytes), at batch rows int8 x int8 over
    the embedding's rows (`int8_dynamic`: the int4 kernel is compute-bound there)."""

    def __init__(self, in_features: int, out_features: int, stored: dict[str, torch.Tensor],
                 table: KernelTable, shortlist: int = SHORTLIST):
        super().__init__("rescored", in_features, out_features, stored, table)
        self.int8_rows = {"qweight": self.w["qweight"], "qscale": stored["qscale"]}
        self.rows = {**self.int8_rows, "residual": stored["residual"]}
        self.shortlist = min(shortlist, out_features)
        self.residual_shortlist = min(RESIDUAL_SHORTLIST, self.shortlist)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        logits = super().forward(rows).float()
        picks = top_indices(logits, self.shortlist)  # [B, k]
        column = rows.float().unsqueeze(-1)
        scores = torch.bmm(gather_rows(self.int8_rows, picks), column).squeeze(-1)
        best = scores.topk(self.residual_shortlist, -1, sorted=False).indices
        exact = torch.bmm(gather_rows(self.rows, picks.gather(1, best)), column).squeeze(-1)
        logits.scatter_(1, picks, scores.scatter_(1, best, exact))
        return logits.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shortlist={self.shortlist}"


def packed_nbytes(model: nn.Module) -> int:
    """Bytes of the packed tensors and float parameters, each shared tensor counted once."""
    seen: dict[int, int] = {}
    for module in model.modules():
        for t in [*getattr(module, "stored", {}).values(), *getattr(module, "w", {}).values()]:
            seen[t.data_ptr()] = t.numel() * t.element_size()
    for p in list(model.parameters()) + list(model.buffers()):
        seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())
