"""Liveness, version and the API description: `GET/HEAD /`, `GET/HEAD /api/version`,
`GET /api/openapi.json`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from functools import lru_cache

from serve.responses import json_response
from serve.version import OLLAMA_API_VERSION


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def api_version(request: Request) -> Response:
    return json_response({"version": OLLAMA_API_VERSION})


@lru_cache(maxsize=1)
def _openapi_body() -> bytes:
    import json

    from serve.openapi import openapi_document  # it reads the field tables of every route

    return json.dumps(openapi_document()).encode()


async def openapi(request: Request) -> Response:
    return Response(_openapi_body(), media_type="application/json")


routes = [
    Route("/api/openapi.json", openapi, methods=["GET"]),
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", api_version, methods=["GET", "HEAD"]),
]
