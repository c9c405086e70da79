"""Run the HTTP server: `corral serve`."""

from __future__ import annotations

import logging

import uvicorn

from serve.app import build_app
from serve.settings import Settings


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = build_app(settings)
    uvicorn.run(
        app,
        host=settings.host.host,
        port=settings.host.port,
        log_level="debug" if settings.debug else "info",
        timeout_graceful_shutdown=5,
    )
