"""POST /api/pull and POST /api/push: registry transfers streamed as Ollama's progress (§4.3)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.errors import APIError
from registry.oci import pull_model, push_model
from serve.responses import stream_events
from serve.wire import decode_body, model_field

PULL_FIELDS = {"model": "string", "name": "string", "insecure": "bool", "stream": "bool",
               "username": "string", "password": "string"}
PUSH_FIELDS = PULL_FIELDS

_END = object()


async def _drive(progress: Iterator[dict]) -> AsyncIterator[dict]:
    """Step a blocking progress generator on worker threads; closing this closes it, which lets
    a download go (it is cancelled when no other pull waits on it)."""
    try:
        while (item := await run_in_threadpool(next, progress, _END)) is not _END:
            yield item
    finally:
        try:
            await run_in_threadpool(progress.close)
        except ValueError:  # still running on a worker whose await was cancelled
            pass


async def _transfer(request: Request, struct: str, empty_error: str,
                    start: Callable[..., Iterator[dict]]) -> Response:
    body = decode_body(await request.body(), struct, PULL_FIELDS)
    name = model_field(body)
    if not name.strip():
        raise APIError(400, empty_error)
    services: Any = request.app.state.services
    options = services.registry_options(name, insecure=bool(body.get("insecure")))
    progress = await run_in_threadpool(start, services.store, name, options)
    stream = body.get("stream")
    return await stream_events(_drive(progress), stream=True if stream is None else stream)


async def pull(request: Request) -> Response:
    return await _transfer(request, "PullRequest", "invalid model name", pull_model)


async def push(request: Request) -> Response:
    return await _transfer(request, "PushRequest", "model is required", push_model)


routes = [
    Route("/api/pull", pull, methods=["POST"]),
    Route("/api/push", push, methods=["POST"]),
]
