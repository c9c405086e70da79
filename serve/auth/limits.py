"""Per-key request limits: a token bucket for the rate, a counter for requests at once.

Both answer how long to wait when over the limit; the middleware turns that into 429 with
`Retry-After`. The clock is injectable so tests can step it instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """`per_minute` requests per key, in bursts of up to `burst` (default one minute's worth)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, per_minute: float, burst: float | None = None) -> float:
        """0 when a request may go now (and it is counted); else the seconds until one may."""
        if per_minute <= 0:
            return 0.0
        size = max(1.0, per_minute if burst is None else burst)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(key_id, _Bucket(size, now))
            rate = per_minute / 60.0
            bucket.tokens = min(size, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate


class ConcurrencyLimiter:
    """At most `limit` requests in flight per key; a request over it waits for none."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str, limit: int) -> bool:
        with self._lock:
            held = self._in_flight.get(key_id, 0)
            if limit > 0 and held >= limit:
                return False
            self._in_flight[key_id] = held + 1
            return True

    def release(self, key_id: str) -> None:
        with self._lock:
            held = self._in_flight.get(key_id, 1) - 1
            if held > 0:
                self._in_flight[key_id] = held
            else:
                self._in_flight.pop(key_id, None)


def retry_after(seconds: float) -> str:
    """Retry-After in whole seconds, never 0 (a client would retry at once and fail again)."""
    return str(max(1, math.ceil(seconds)))
