"""Wall-clock sections of an engine step, for `bench.profile`; free when switched off.

The engine and the model runner wrap each part of a step in `timer.section(name)`. Disabled
(the default) a section is one attribute test and a shared null context. Enabled, it adds the
section's host time to a running total; the forward's inside (layer linears, attention, LM
head) is split by hooks that `bench.profile` installs on the model, never by the engine.
On CUDA the times are host times (kernels run asynchronously), so profile on CPU or sync.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

_NULL = contextlib.nullcontext()


class StepTimer:
    def __init__(self) -> None:
        self.enabled = False
        self.totals: dict[str, float] = defaultdict(float)  # seconds per section name

    def section(self, name: str):
        return self._timed(name) if self.enabled else _NULL

    @contextlib.contextmanager
    def _timed(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += seconds

    def reset(self) -> None:
        self.totals.clear()
