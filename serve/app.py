"""The Starlette application: routes per API family, Ollama's 404/405/500 shapes, middleware."""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from registry.errors import APIError
from serve.middleware import APIKeyMiddleware, BodyLimitMiddleware, CORSMiddleware, HostMiddleware
from serve.responses import error_response
from serve.routes import all_routes
from serve.services import Services
from serve.settings import Settings

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


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, str(exc) or type(exc).__name__)


def build_app(settings: Settings, services: Services | None = None) -> Starlette:
    """The ASGI app; `services` is built from `settings` at startup when not given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or await Services.start(settings)
        try:
            yield
        finally:
            if owned:
                await app.state.services.close()

    middleware = [
        Middleware(CORSMiddleware, extra_origins=settings.origins),
        Middleware(HostMiddleware, bind_host=settings.host.host),
        Middleware(APIKeyMiddleware, keys=settings.api_keys),
        Middleware(
            BodyLimitMiddleware,
            json_limit=settings.max_json_bytes,
            blob_limit=settings.max_body_bytes,
        ),
    ]
    return Starlette(
        routes=all_routes(),
        middleware=middleware,
        exception_handlers={
            HTTPException: _http_exception,
            APIError: _api_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
