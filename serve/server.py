"""Run the HTTP server: `corral serve`."""

from __future__ import annotations

import logging

import uvicorn

from serve.app import build_app
from serve.auth import redact
from serve.settings import Settings
from serve.transport import protocol


def run(settings: Settings) -> None:
    redact.install()  # before any handler exists: every record of every logger is redacted
    redact.add_secrets([*settings.api_keys, *(pw for _, _, pw in settings.registry_auth)])
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = build_app(settings)
    tls = {}
    if settings.tls_cert or settings.tls_key:
        tls = {"ssl_certfile": str(settings.tls_cert or settings.tls_key),
               "ssl_keyfile": str(settings.tls_key or settings.tls_cert)}
    uvicorn.run(
        app,
        host=settings.host.host,
        port=settings.host.port,
        log_level="trace" if settings.trace else "debug" if settings.debug else "info",
        timeout_graceful_shutdown=5,
        http=protocol(settings.header_timeout),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        **tls,
    )
