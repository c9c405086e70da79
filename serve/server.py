"""Run the HTTP server: `corral serve`."""

from __future__ import annotations

import logging
import os

import uvicorn

from serve import logs
from serve.app import build_app
from serve.auth import redact
from serve.drain import DrainingServer
from serve.settings import Settings
from serve.transport import protocol


def run(settings: Settings) -> None:
    redact.install()  # before any handler exists: every record of every logger is redacted
    redact.add_secrets([*settings.api_keys, *(pw for _, _, pw in settings.registry_auth)])
    logs.configure(settings.log_format, settings.debug)
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
        **tls,
    )
    server = DrainingServer(config, app, settings.drain_timeout)
    server.run()
    if server.signalled is not None:
        # Drained: worker threads still blocked on a socket (a cut pull) must not hold the exit.
        logging.shutdown()
        os._exit(0)
