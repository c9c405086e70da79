"""Adapter models on a shared base runner: their residency record and what a lease hands out.

An adapter model is not a runner of its own. Its LoRA weights sit in a slot of its base's
engine; a request gets the base instance seen through `AdapterView`, whose engine tags every
request with the adapter, so the routes need not know an adapter is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class AdapterRunner:
    """One resident adapter model: its own keep_alive, on `base` (a residency Runner)."""

    ref: Any  # the adapter model's ModelRef
    base: Any  # the Runner whose engine holds the adapter
    keep_alive: float
    size: int = 0  # bytes of the adapter's weights (the base's are counted by the base)
    refcount: int = 0
    deadline: float | None = None
    last_used: float = 0.0
    unloading: bool = False

    @property
    def idle(self) -> bool:
        return self.refcount == 0


class AdapterEngine:
    """The base engine, with `add_request` bound to one adapter."""

    def __init__(self, engine: Any, key: str):
        self._engine, self._key = engine, key

    def add_request(self, *args, **kwargs):
        return self._engine.add_request(*args, lora=self._key, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class AdapterView:
    """The base instance as an adapter model's lease sees it."""

    def __init__(self, instance: Any, key: str):
        self._instance = instance
        self.engine = AdapterEngine(instance.engine, key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._instance, name)


def lora_requests_info(stats: Any) -> dict[str, str]:
    """The labels of vLLM's `vllm:lora_requests_info` gauge for one engine's EngineStats
    (its value is the time of the reading, as vLLM sets it): what the Gateway API Inference
    Extension's LoRA-affinity routing reads."""
    return {
        "running_lora_adapters": ",".join(stats.running_loras),
        "waiting_lora_adapters": ",".join(stats.waiting_loras),
        "max_lora": str(stats.max_loras),
    }
