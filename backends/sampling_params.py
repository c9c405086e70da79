"""Per-request sampling parameters, with Ollama's current defaults (reference §2.6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64  # 0 disables, -1 means num_ctx
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # None (Ollama's -1): unseeded
    num_predict: int = -1  # -1: until a stop condition or the context is full
    stop: list[str] = field(default_factory=list)
    # vLLM's extension, which load generators send (GuideLLM): end-of-sequence tokens do not
    # end the reply, so every request runs to num_predict and outputs are of the asked length.
    ignore_eos: bool = False
    # Structured output / logprobs hooks, filled by the structured-output layer.
    logprobs: bool = False
    top_logprobs: int = 0
    # A `backends.structured.GrammarSpec` (Ollama's `format`), or None: unconstrained.
    format: Any = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0
