"""The adapters resident on one loaded base model: slots, wrapped layers, and the step batch.

Layers are wrapped in `LoRALinear` the first time an adapter adapts them and stay wrapped (a
wrapped layer without deltas in the step costs one attribute check). Slots are small integers
reused after removal; which adapter to drop when all are taken is residency's choice (LRU).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from backends.lora.layers import LoRABatch, LoRAContext, LoRALinear, is_linear
from backends.lora.weights import LoRAWeights


class LoRAManager:
    def __init__(self, model: nn.Module, max_loras: int, path: str = "auto"):
        self.model = model
        self.max_loras = max(1, max_loras)
        self.path = path
        self.context = LoRAContext()
        self._slots: dict[str, int] = {}  # adapter key -> slot
        self._weights: dict[str, LoRAWeights] = {}
        self._layers: dict[str, LoRALinear] = {}

    @property
    def keys(self) -> list[str]:
        return list(self._slots)

    def name_of(self, key: str) -> str:
        return self._weights[key].name

    def slot_of(self, key: str) -> int | None:
        return self._slots.get(key)

    def add(self, weights: LoRAWeights) -> int:
        """Make an adapter resident; ValueError when it does not fit the model or no slot is free."""
        if weights.key in self._slots:
            return self._slots[weights.key]
        free = sorted(set(range(self.max_loras)) - set(self._slots.values()))
        if not free:
            raise ValueError(f"all {self.max_loras} LoRA slots are taken")
        for module, w in weights.modules.items():
            layer = self._layer(module)
            if (w.A.shape[1], w.B.shape[0]) != (layer.in_features, layer.out_features):
                raise ValueError(f"{module}: the adapter is {w.B.shape[0]}x{w.A.shape[1]}, the "
                                 f"layer {layer.out_features}x{layer.in_features}")
        self._slots[weights.key] = free[0]
        self._weights[weights.key] = weights
        self._restack(weights.modules)
        return free[0]

    def remove(self, key: str) -> None:
        if key not in self._slots:
            return
        del self._slots[key]
        weights = self._weights.pop(key)
        self._restack(weights.modules)

    def _restack(self, modules) -> None:
        for module in modules:
            users = {self._slots[k]: w.modules[module] for k, w in self._weights.items()
                     if module in w.modules}
            layer = self._layers[module]
            layer.set_slots({slot: (m.A, m.B) for slot, m in users.items()})
            # The weights become views of the new stack, so the stack holds the only copy.
            for slot, m in users.items():
                m.A, m.B = layer.slots[slot]

    def _layer(self, module: str) -> LoRALinear:
        layer = self._layers.get(module)
        if layer is not None:
            return layer
        try:
            base = self.model.get_submodule(module)
        except AttributeError:
            raise ValueError(f"the base model has no module {module}") from None
        if isinstance(base, LoRALinear):  # wrapped by an earlier manager of this model
            base = base.base
        if not is_linear(base):
            raise ValueError(f"{module} is a {type(base).__name__}, not a Linear layer")
        parent_name, _, child = module.rpartition(".")
        layer = LoRALinear(base, self.context)
        setattr(self.model.get_submodule(parent_name) if parent_name else self.model, child, layer)
        self._layers[module] = layer
        return layer

    @contextmanager
    def step(self, token_slots: list[int], device: torch.device):
        """The step's LoRABatch is visible to the layers for the duration of the forward."""
        self.context.batch = LoRABatch.from_token_slots(token_slots, device, self.path)
        try:
            yield
        finally:
            self.context.batch = None
