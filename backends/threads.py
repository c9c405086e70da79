"""How many intra-op threads torch gets in a serving process, and which threads run torch work."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def torch_threads(requested: int = 0) -> int:
    """`requested` (CORRAL_NUM_THREADS), or one per usable core. Every core, not cores - 1:
    the event loop's share of a step is small (one hand-off per step per loop), and on
    gemma3:270m on 2 cores the second torch thread made decode 35% faster at 1 stream and 54%
    at 32 (`make profile`). Set once per process: the pool is shared by every model, and a
    request's `num_thread` never reaches it (each new size leaves another OpenMP pool behind)."""
    return requested if requested > 0 else max(1, len(os.sched_getaffinity(0)))


def use_torch_threads(requested: int = 0) -> None:
    """Give this process's torch `torch_threads(requested)` intra-op threads. For a process's
    start: the server's, and the child that packs a model for it."""
    import torch

    torch.set_num_threads(torch_threads(requested))


async def in_own_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` on a thread of its own that ends with the call, awaited.

    For torch work off the engine threads (loads, embeddings, adapters). Each thread that runs
    a parallel torch op keeps an OpenMP team of its own until it exits; once libgomp manages
    more threads than there are cores, its workers stop spinning between ops and sleep, and
    every op then waits on a wake-up. A load left behind in a long-lived pool thread (asyncio's
    executor, starlette's) made each later decode step ~65% slower on 2 cores (gemma3:270m:
    44.6 ms against 27.9 in-process); a thread that exits takes its team with it."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-torch")
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, call)
    finally:
        pool.shutdown(wait=False)
