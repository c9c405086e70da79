"""Run the HTTP server: `corral serve`."""

from __future__ import annotations

import logging
import os
import resource
import sys

import torch
import uvicorn

from backends.threads import use_torch_threads
from serve import logs
from serve.app import build_app
from serve.auth import redact
from serve.drain import DrainingServer
from serve.settings import Settings
from serve.transport import protocol


KEEP_ALIVE_S = 65


def raise_fd_limit() -> None:
    """Every client connection and stream holds a file descriptor; the soft limit (often 1024)
    would refuse clients long before the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def skip_triton_without_cuda() -> None:
    """On a torch built without CUDA, make `import triton` fail rather than load it: triton
    compiles GPU kernels only, yet transformers imports torch._dynamo, whose import probes for
    the triton package by importing it, and libtriton then holds 66 MiB resident in every CPU
    server (gemma3:270m: a sixth of what it holds beyond the weights and KV cache)."""
    if torch.version.cuda is None and torch.version.hip is None:
        sys.modules.setdefault("triton", None)  # type: ignore[arg-type]


def run(settings: Settings) -> None:
    redact.install()  # before any handler exists: every record of every logger is redacted
    redact.add_secrets([*settings.api_keys, *(pw for _, _, pw in settings.registry_auth)])
    logs.configure(settings.log_format, settings.debug)
    use_torch_threads(settings.num_threads)
    skip_triton_without_cuda()
    raise_fd_limit()
    app = build_app(settings)
    tls = {}
    if settings.tls_cert or settings.tls_key:
        tls = {"ssl_certfile": str(settings.tls_cert or settings.tls_key),
               "ssl_keyfile": str(settings.tls_key or settings.tls_cert)}
    config = uvicorn.Config(
        app,
        host=settings.host.host,
        port=settings.host.port,
        log_level="trace" if settings.trace else "debug" if settings.debug else "info",
        log_config=None,  # logs.configure's handler, text or JSON
        access_log=False,
        timeout_graceful_shutdown=5,
        http=protocol(settings.header_timeout),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # Longer than clients keep idle connections (httpx 5 s, Go 90 s less a margin is the
        # client's business): with equal timeouts a client reuses a connection just as the
        # server closes it and the request fails with a reset.
        timeout_keep_alive=KEEP_ALIVE_S,
        **tls,
    )
    server = DrainingServer(config, app, settings.drain_timeout)
    server.run()
    if server.signalled is not None:
        # Drained: worker threads still blocked on a socket (a cut pull) must not hold the exit.
        logging.shutdown()
        os._exit(0)
