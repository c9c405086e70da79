"""The server's life as probes see it: starting, ready, draining; and the work still in flight.

One `Lifecycle` per app. Start-up work (serve/startup.py) fills `pending` and `failed`; the drain
(serve/drain.py) sets `draining` and waits on `in_flight`; /ready and /health (routes/health.py)
read it. Everything here runs on the event loop, so plain attributes need no locks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Lifecycle:
    pending: list[str] = field(default_factory=list)  # start-up steps not done yet
    failed: dict[str, str] = field(default_factory=dict)  # start-up step -> why it failed
    started: bool = False  # every start-up step has run
    draining: bool = False
    in_flight: int = 0  # inference requests and transfers running now
    last_beat: float = field(default_factory=time.monotonic)
    _idle: asyncio.Event | None = field(default=None, repr=False)

    def work_started(self) -> None:
        self.in_flight += 1
        if self._idle is not None:
            self._idle.clear()

    def work_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once nothing is in flight; False if `timeout` seconds pass first."""
        if self._idle is None:
            self._idle = asyncio.Event()
        if self.in_flight == 0:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return self.in_flight == 0
        return True

    async def heartbeat(self, interval: float = 1.0) -> None:
        """Stamp `last_beat` while the event loop runs; a stale stamp means it was blocked."""
        while True:
            self.last_beat = time.monotonic()
            await asyncio.sleep(interval)
