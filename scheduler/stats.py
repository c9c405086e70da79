"""What the engine and residency report as they work, for whoever keeps the metrics.

The scheduler layer knows when a request finishes, a model loads or unloads and a queue
overflows; the serving layer owns Prometheus. A `StatsListener` is the one-way line between
them: the engine and residency call it (from the engine thread or the event loop), the listener
must not block, and the default one drops everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestStats:
    """One finished request, as vLLM's per-request metrics count it (seconds, token counts)."""

    model: str
    finished_reason: str  # stop | length | abort | error
    num_prompt_tokens: int
    num_generation_tokens: int
    num_prefix_query_tokens: int  # prompt tokens looked up in the prefix cache
    num_prefix_hit_tokens: int
    num_preemptions: int
    queue_time: float  # arrival to first scheduled (0 if never scheduled)
    time_to_first_token: float | None  # None when no token came
    e2e_latency: float
    inter_token_latencies: list[float] = field(default_factory=list)


class StatsListener:
    """No-op base: override what you count."""

    def request_finished(self, stats: RequestStats) -> None:
        pass

    def queue_rejected(self, model: str) -> None:
        pass

    def model_loaded(self, model: str, devices: list[str], seconds: float) -> None:
        pass

    def model_unloaded(self, model: str, reason: str) -> None:
        pass


NO_STATS = StatsListener()
