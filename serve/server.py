"""Run the HTTP server: `corral serve`."""

from __future__ import annotations

import logging
import os

import uvicorn

from serve import logs
from serve.app import build_app
from serve.drain import DrainingServer
from serve.settings import Settings


def run(settings: Settings) -> None:
    logs.configure(settings.log_format, settings.debug)
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host.host,
        port=settings.host.port,
        log_level="debug" if settings.debug else "info",
        log_config=None,  # logs.configure's handler, text or JSON
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(config, app, settings.drain_timeout)
    server.run()
    if server.signalled is not None:
        # Drained: worker threads still blocked on a socket (a cut pull) must not hold the exit.
        logging.shutdown()
        os._exit(0)
