"""Helpers for the operability tests: NDJSON streams in threads, /metrics samples, /ready polls."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

GEMMA = "gemma3:270m"


def counting(num_predict: int) -> dict:
    """A raw greedy count: it keeps going for `num_predict` tokens (a story may end early)."""
    return {"model": GEMMA, "prompt": "1, 2, 3, 4, 5, 6, 7,", "raw": True,
            "options": {"temperature": 0, "num_predict": num_predict}}


@dataclass
class Stream:
    """A streamed POST read on its own thread; `lines` are the decoded NDJSON lines."""

    url: str
    body: dict
    lines: list[dict] = field(default_factory=list)
    status: int | None = None
    error: str | None = None
    first_at: float | None = None  # monotonic time of the first line
    done_at: float | None = None
    thread: threading.Thread | None = None

    def start(self) -> "Stream":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with httpx.stream("POST", self.url, json=self.body, timeout=600) as resp:
                self.status = resp.status_code
                for line in resp.iter_lines():
                    if line.strip():
                        self.lines.append(json.loads(line))
                        if self.first_at is None:
                            self.first_at = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done_at = time.monotonic()

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"stream still running after {timeout} s: {self.lines[-2:]}"

    @property
    def last(self) -> dict:
        return self.lines[-1] if self.lines else {}


def wait_first_lines(streams: list[Stream], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while any(s.first_at is None for s in streams):
        broken = [s for s in streams if s.done_at is not None and s.first_at is None]
        assert not broken, f"a stream ended before its first line: {broken[0].status} {broken[0].error}"
        assert time.monotonic() < deadline, "streams did not start"
        time.sleep(0.05)


def metric_samples(url: str) -> dict[str, dict[tuple, float]]:
    """/metrics parsed with prometheus_client's parser: sample name -> label items -> value."""
    text = httpx.get(url + "/metrics", timeout=30).text
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metric_types(url: str) -> dict[str, str]:
    text = httpx.get(url + "/metrics", timeout=30).text
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def total(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    """Sum of `name`'s samples whose labels include `labels` (ignoring histogram buckets)."""
    want = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if want <= set(k))


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
