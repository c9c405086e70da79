"""Serving metrics in the vocabulary of `vllm bench serve` (reference/engines.md §7.2).

TTFT: request send -> first streamed chunk carrying output text.
ITL: gaps between consecutive text-carrying chunks of one request.
TPOT: per request, (e2e - TTFT) / (output_tokens - 1).
Throughput: output tokens of the completed requests / wall time of the phase.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = (len(data) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def gaps(times: Sequence[float]) -> list[float]:
    """Differences between consecutive timestamps: the inter-token latencies of one stream."""
    return [b - a for a, b in zip(times, times[1:])]


def tokens_per_second(tokens: int, seconds: float) -> float | None:
    return tokens / seconds if seconds > 0 else None


@dataclass
class RequestRecord:
    """One streamed request as the client saw it; times are `time.perf_counter()` seconds."""

    start: float
    token_times: list[float] = field(default_factory=list)
    end: float | None = None
    output_tokens: int | None = None  # as the server reports it (eval_count, tokens_predicted)
    status: int | None = None
    error: str | None = None
    client: int = 0
    text: str = ""
    final: dict = field(default_factory=dict)  # the server's last chunk (Ollama's timings, ...)

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None

    @property
    def tokens(self) -> int:
        """Server-reported count when given, else the number of text-carrying chunks."""
        return self.output_tokens if self.output_tokens is not None else len(self.token_times)

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.start if self.token_times else None

    @property
    def e2e(self) -> float | None:
        return self.end - self.start if self.end is not None else None

    @property
    def itls(self) -> list[float]:
        return gaps(self.token_times)

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2e is None or self.tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.tokens - 1)


@dataclass
class PhaseStats:
    """Aggregate figures of one load phase (one system at one concurrency)."""

    system: str
    concurrency: int
    requests: int
    errors: int
    output_tokens: int
    wall_s: float
    tok_s: float | None
    ttft_p50: float | None
    ttft_p99: float | None
    itl_p50: float | None
    itl_p99: float | None
    tpot_mean: float | None
    e2e_p50: float | None
    first_error: str | None = None
    # The server's peak VmRSS during the phase (bench/memory.py); None when its pid is unknown.
    peak_rss_bytes: int | None = None

    @classmethod
    def from_records(
        cls, system: str, concurrency: int, records: Sequence[RequestRecord], wall_s: float
    ) -> "PhaseStats":
        done = [r for r in records if r.ok]
        ttfts = [r.ttft for r in done if r.ttft is not None]
        itls = [gap for r in done for gap in r.itls]
        tpots = [r.tpot for r in done if r.tpot is not None]
        e2es = [r.e2e for r in done if r.e2e is not None]
        tokens = sum(r.tokens for r in done)
        failed = [r for r in records if not r.ok]
        return cls(
            system=system,
            concurrency=concurrency,
            requests=len(records),
            errors=len(failed),
            output_tokens=tokens,
            wall_s=wall_s,
            tok_s=tokens_per_second(tokens, wall_s),
            ttft_p50=percentile(ttfts, 50),
            ttft_p99=percentile(ttfts, 99),
            itl_p50=percentile(itls, 50),
            itl_p99=percentile(itls, 99),
            tpot_mean=statistics.fmean(tpots) if tpots else None,
            e2e_p50=percentile(e2es, 50),
            first_error=failed[0].error if failed else None,
        )


def median(values: Iterable[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None
