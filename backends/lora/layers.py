"""Low-rank deltas applied per step over a shared base layer (punica/S-LoRA's technique).

A step's flattened tokens carry an adapter slot each (-1: the plain base). `LoRALinear` runs its
base layer once over all of them, then adds `x @ A.T @ B.T` to the adapter rows only, batched:
- "stacked": two plain matmuls against every resident adapter's factors side by side
  ([S*r, in] and [S*r, out]), a mask keeping each row's own slot between them; the fewest, largest
  kernels, at S times the (tiny) low-rank FLOPs: the default while S*r stays small;
- "gather" (BGMV): each row gathers its own slot's A and B from the stacks, and two batched
  matrix-vector products give every row's delta at once;
- "group": the rows of one adapter are gathered and multiplied as one small matmul pair per
  adapter present (SGMV-like); best when a prefill brings many rows of one adapter.
Base rows are never touched, and there is never a forward pass per adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

PATHS = ("auto", "stacked", "gather", "group")
# Above this many adapter rows per adapter, "auto" groups: gathering would copy A and B per row.
_GATHER_MAX_ROWS_PER_ADAPTER = 8
# "auto" stacks while all slots' ranks side by side stay this narrow.
_STACKED_MAX_WIDTH = 256


def is_linear(module: nn.Module) -> bool:
    """A layer LoRA can wrap: nn.Linear, or a packed quantized one (backends/quant), which
    computes the same x @ W.T from int4/int8 weights, alone or as its columns of a fused
    layer; the delta runs beside any of them."""
    from backends.quant.modules import PackedLinear, ProjectionSlice

    return isinstance(module, (nn.Linear, PackedLinear, ProjectionSlice))


@dataclass
class LoRABatch:
    """The adapter rows of one step: built once per step by the runner, read by every layer."""

    rows: Tensor  # [n] indices into the step's flattened tokens
    slots: Tensor  # [n] the slot of each of those rows
    groups: list[tuple[int, Tensor]]  # (slot, row indices) per adapter present
    path: str = "auto"
    fallback: str = "gather"  # what "auto" does where stacking is too wide: gather or group
    all_rows: bool = False  # every token of the step has an adapter: no gather/scatter of rows
    # Per stack layout, what every layer with that layout needs (most layers share one).
    memo: dict = field(default_factory=dict)

    def take(self, x: Tensor) -> Tensor:
        return x if self.all_rows else x.index_select(0, self.rows)

    def put(self, y: Tensor, delta: Tensor) -> None:
        if self.all_rows:
            y.add_(delta)
        else:
            y.index_add_(0, self.rows, delta)

    @classmethod
    def from_token_slots(cls, token_slots: list[int], device: torch.device,
                         path: str = "auto") -> "LoRABatch | None":
        """None when no token of the step has an adapter."""
        rows = [i for i, s in enumerate(token_slots) if s >= 0]
        if not rows:
            return None
        by_slot: dict[int, list[int]] = {}
        for i in rows:
            by_slot.setdefault(token_slots[i], []).append(i)
        many = len(rows) > _GATHER_MAX_ROWS_PER_ADAPTER * len(by_slot)
        return cls(
            rows=torch.tensor(rows, device=device),
            slots=torch.tensor([token_slots[i] for i in rows], device=device),
            groups=[(s, torch.tensor(ix, device=device)) for s, ix in by_slot.items()],
            path=path, fallback="group" if many else "gather", all_rows=len(rows) == len(token_slots),
        )


@dataclass
class LoRAContext:
    """The current step's batch, shared by one model's LoRA layers.

    Set by that model's runner around its forward (its engine thread is the only one running
    the model), so nothing per step lives in module globals."""

    batch: LoRABatch | None = None


@dataclass
class _Stack:
    A: Tensor  # [S, r_max, in], zero past each slot's rank
    Bt: Tensor  # [S, r_max, out]: B transposed, so both stacks flatten to [S*r_max, ...] views
    local: Tensor  # [max slot + 1] -> index into the stack, -1 where this layer has no delta
    views: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)  # slot -> (A, B)
    layout: tuple = ()  # (slots in stack order, r_max): layers alike share per-step work

    @property
    def rank(self) -> int:
        return self.A.shape[1]

    def local_of(self, slots: Tensor) -> Tensor:
        """Each row's index into the stack; -1 where this layer has no delta for its slot."""
        inside = slots < self.local.shape[0]
        return torch.where(inside, self.local[slots.clamp(max=self.local.shape[0] - 1)], -1)


class LoRALinear(nn.Module):
    """A Linear layer plus the deltas of the resident adapters that adapt it."""

    def __init__(self, base: nn.Module, context: LoRAContext):
        super().__init__()
        self.base = base
        self.context = context
        self.in_features, self.out_features = base.in_features, base.out_features
        self._stack: _Stack | None = None

    @property
    def weight(self) -> Tensor:  # for code that reads the wrapped layer's weight
        return self.base.weight

    @property
    def slots(self) -> dict[int, tuple[Tensor, Tensor]]:
        return self._stack.views if self._stack is not None else {}

    def set_slots(self, slots: dict[int, tuple[Tensor, Tensor]]) -> None:
        """Restack the deltas {slot: (A [r, in], B [out, r])}; the views keep no second copy."""
        if not slots:
            self._stack = None
            return
        order = sorted(slots)
        r_max = max(slots[s][0].shape[0] for s in order)
        ref = slots[order[0]][0]
        A = ref.new_zeros(len(order), r_max, self.in_features)
        Bt = ref.new_zeros(len(order), r_max, self.out_features)
        local = torch.full((order[-1] + 1,), -1, dtype=torch.long, device=ref.device)
        views = {}
        for i, s in enumerate(order):
            a, b = slots[s]
            r = a.shape[0]
            A[i, :r], Bt[i, :r] = a, b.t()
            local[s] = i
            views[s] = (A[i, :r], Bt[i, :r].t())
        self._stack = _Stack(A, Bt, local, views, (tuple(order), r_max))

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        batch, stack = self.context.batch, self._stack
        if batch is None or stack is None:
            return y
        x2, y2 = x.reshape(-1, self.in_features), y.view(-1, self.out_features)
        path = batch.path
        if path == "auto":
            path = "stacked" if stack.A.shape[0] * stack.rank <= _STACKED_MAX_WIDTH else batch.fallback
        getattr(self, f"_{path}")(x2, y2, batch, stack)
        return y

    @staticmethod
    def _stacked(x: Tensor, y: Tensor, batch: LoRABatch, stack: _Stack) -> None:
        S, r = stack.A.shape[0], stack.rank
        own = batch.memo.get(("own", stack.layout))
        if own is None:  # [n, S*r]: which of the side-by-side ranks belong to each row's slot
            local = stack.local_of(batch.slots)
            own = torch.arange(S * r, device=x.device).div(r, rounding_mode="floor") == local[:, None]
            own = batch.memo[("own", stack.layout)] = own.to(x.dtype)
        h = batch.take(x) @ stack.A.view(S * r, -1).t()
        batch.put(y, h.mul_(own) @ stack.Bt.view(S * r, -1))

    @staticmethod
    def _group(x: Tensor, y: Tensor, batch: LoRABatch, stack: _Stack) -> None:
        for slot, rows in batch.groups:
            if slot in stack.views:
                A, B = stack.views[slot]
                y.index_add_(0, rows, (x.index_select(0, rows) @ A.t()) @ B.t())

    @staticmethod
    def _gather(x: Tensor, y: Tensor, batch: LoRABatch, stack: _Stack) -> None:
        local = stack.local_of(batch.slots)
        keep = local >= 0
        rows, local = batch.rows[keep], local[keep]
        if rows.numel() == 0:
            return
        xs = x.index_select(0, rows).unsqueeze(1)  # [n, 1, in]
        h = torch.bmm(xs, stack.A.index_select(0, local).transpose(1, 2))  # [n, 1, r]
        y.index_add_(0, rows, torch.bmm(h, stack.Bt.index_select(0, local)).squeeze(1))
