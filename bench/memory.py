"""Resident memory of a server process while a load phase runs: the peak of VmRSS, sampled.

The issue's memory target compares servers holding the same work (32 sequences of 1024 tokens),
so the figure is the peak during that phase, not the idle size: KV pages a server allocated but
never touched are not resident and do not count, on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path


def vm_rss_bytes(pid: int) -> int | None:
    """VmRSS of `pid` from /proc (None when the process is gone or /proc is not Linux's)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRSS:
    """The highest VmRSS seen so far; `peak` is None until one sample succeeded."""

    def __init__(self) -> None:
        self.peak: int | None = None

    def sample(self, pid: int) -> None:
        rss = vm_rss_bytes(pid)
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss


@contextlib.asynccontextmanager
async def peak_rss(pid: int | None, interval_s: float = 0.1) -> AsyncIterator[PeakRSS]:
    """Sample `pid`'s VmRSS every `interval_s` while the block runs (nothing when pid is None)."""
    peak = PeakRSS()
    if pid is None:
        yield peak
        return

    async def poll() -> None:
        while True:
            peak.sample(pid)
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(poll())
    try:
        yield peak
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        peak.sample(pid)
