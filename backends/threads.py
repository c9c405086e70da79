"""How many intra-op threads torch gets in a serving process."""

from __future__ import annotations

import os


def torch_threads(requested: int = 0) -> int:
    """`requested` (CORRAL_NUM_THREADS), or one per usable core. Every core, not cores - 1:
    the event loop's share of a step is small (one hand-off per step per loop), and on
    gemma3:270m on 2 cores the second torch thread made decode 35% faster at 1 stream and 54%
    at 32 (`make profile`). Set once per process: the pool is shared by every model, and a
    request's `num_thread` never reaches it (each new size leaves another OpenMP pool behind)."""
    return requested if requested > 0 else max(1, len(os.sched_getaffinity(0)))
