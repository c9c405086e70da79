"""Faults injected into engine steps, so tests can prove what the server does when a step fails.

Armed only through `POST /api/debug/faults`, which exists only when `CORRAL_DEBUG_FAULTS=1`.
Each engine checks the process-wide injector at the start of every step:

- `raise`: the step raises; the engine fails that step's requests and keeps running.
- `crash`: the engine thread dies (an exception the engine's loop does not catch), as a
  segfaulting kernel or an OOM kill of a worker would leave it.
- `stall`: the step sleeps `seconds` (a hung kernel or a deadlocked collective).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

KINDS = ("raise", "crash", "stall")


class InjectedFault(RuntimeError):
    """The `raise` fault: an ordinary step failure."""


class EngineCrash(BaseException):
    """The `crash` fault: a BaseException, so the engine loop's `except Exception` lets it kill the thread."""


@dataclass
class Fault:
    kind: str
    model: str | None = None  # None: any model
    count: int = 1  # steps it fires on; -1 forever
    seconds: float = 0.0  # for stall


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def arm(self, fault: Fault) -> None:
        if fault.kind not in KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; one of {', '.join(KINDS)}")
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def _take(self, model: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.model is None or fault.model == model:
                    if fault.count > 0:
                        fault.count -= 1
                        if fault.count == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def check(self, model: str | None) -> None:
        """Called by an engine at the start of a step; fires the first armed fault matching it."""
        if not self._faults:  # the common case: one attribute read per step
            return
        fault = self._take(model)
        if fault is None:
            return
        if fault.kind == "raise":
            raise InjectedFault(f"injected fault in a step of {model}")
        if fault.kind == "crash":
            raise EngineCrash(f"injected crash of the engine thread of {model}")
        time.sleep(fault.seconds)


INJECTOR = FaultInjector()
