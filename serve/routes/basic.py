"""Liveness and version: `GET/HEAD /` and `GET/HEAD /api/version`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from serve.responses import json_response
from serve.version import OLLAMA_API_VERSION


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def api_version(request: Request) -> Response:
    return json_response({"version": OLLAMA_API_VERSION})


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", api_version, methods=["GET", "HEAD"]),
]
