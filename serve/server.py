"""Run the HTTP server: `corral serve`."""

from __future__ import annotations

import logging
import os
import resource

import torch
import uvicorn

from serve.app import build_app
from serve.settings import Settings


KEEP_ALIVE_S = 65


def server_threads() -> int:
    """torch's intra-op threads for the whole process: one per usable core, less one for the
    event loop and the engine threads' Python. Set once here; a request's `num_thread` never
    reaches torch, since the pool is process-wide (every model's) and each new size leaves
    another OpenMP pool behind."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def raise_fd_limit() -> None:
    """Every client connection and stream holds a file descriptor; the soft limit (often 1024)
    would refuse clients long before the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    torch.set_num_threads(server_threads())
    raise_fd_limit()
    app = build_app(settings)
    uvicorn.run(
        app,
        host=settings.host.host,
        port=settings.host.port,
        log_level="debug" if settings.debug else "info",
        timeout_graceful_shutdown=5,
        # Longer than clients keep idle connections (httpx 5 s, Go 90 s less a margin is the
        # client's business): with equal timeouts a client reuses a connection just as the
        # server closes it and the request fails with a reset.
        timeout_keep_alive=KEEP_ALIVE_S,
    )
