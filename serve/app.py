"""The Starlette application: routes per API family, Ollama's 404/405/500 shapes, middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from registry.errors import APIError, no_space
from serve.access_log import AccessLogMiddleware
from serve.auth.keys import KeyRing
from serve.auth.middleware import AccessMiddleware
from serve.drain import DrainMiddleware
from serve.lifecycle import Lifecycle
from serve.middleware import BodyLimitMiddleware, CORSMiddleware, HostMiddleware
from serve.responses import error_response
from serve.metrics import ServerMetrics
from serve.routes import all_routes
from serve.services import Services
from serve.settings import Settings
from serve.startup import StartupWork

log = logging.getLogger("corral.serve")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return PlainTextResponse("404 page not found", status_code=404)
    if exc.status_code == 405:
        # Starlette's router names the route's methods in the exception's Allow header.
        return PlainTextResponse("405 method not allowed", status_code=405, headers=exc.headers)
    return error_response(exc.status_code, str(exc.detail))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc.status, exc.message)


async def _os_error(request: Request, exc: Exception) -> Response:
    if (full := no_space(exc)) is None:
        raise exc  # any other OSError is a server error (_server_error logs it)
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(full.status, full.message)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, str(exc) or type(exc).__name__)


def build_app(settings: Settings, services: Services | None = None) -> Starlette:
    """The ASGI app; `services` is built from `settings` at startup when not given."""

    lifecycle = Lifecycle()
    metrics = ServerMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or await Services.start(settings, metrics)
        metrics.residency = app.state.services.residency
        background = [asyncio.create_task(lifecycle.heartbeat())]
        if owned:  # start-up work runs once uvicorn listens: probes answer meanwhile
            background.append(asyncio.create_task(StartupWork(app.state.services, lifecycle).run()))
        else:  # an injected runtime (tests) is ready as given
            lifecycle.started = True
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if owned:
                await app.state.services.close()

    middleware = [
        Middleware(AccessLogMiddleware, metrics=metrics),
        Middleware(CORSMiddleware, extra_origins=settings.origins),
        Middleware(HostMiddleware, bind_host=settings.host.host),
        # Outside the access check: the bodies it reads for model names are capped too.
        Middleware(
            BodyLimitMiddleware,
            json_limit=settings.max_json_bytes,
            blob_limit=settings.max_body_bytes,
        ),
        Middleware(
            AccessMiddleware,
            keyring=KeyRing(settings.api_keys, settings.api_keys_file),
            metrics_open=settings.metrics_open,
            rate_limit=settings.rate_limit,
            concurrency=settings.concurrency_limit,
        ),
        Middleware(DrainMiddleware, lifecycle=lifecycle),
    ]
    app = Starlette(
        routes=all_routes(),
        middleware=middleware,
        exception_handlers={
            HTTPException: _http_exception,
            APIError: _api_error,
            OSError: _os_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    return app
