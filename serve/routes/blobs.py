"""`HEAD` and `POST /api/blobs/:digest`: raw uploads for create, verified before they are visible."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from registry.errors import APIError
from registry.store import validate_digest
from serve.responses import error_response


async def head_blob(request: Request) -> Response:
    digest = request.path_params["digest"]
    validate_digest(digest)
    store = request.app.state.services.store
    if not store.has_blob(digest):
        return error_response(404, f'blob "{digest}" not found')
    return Response(status_code=200)


async def create_blob(request: Request) -> Response:
    digest = request.path_params["digest"]
    validate_digest(digest)
    store = request.app.state.services.store
    if store.has_blob(digest):
        return Response(status_code=200)
    writer = await run_in_threadpool(store.blob_writer, digest)
    try:
        async for chunk in request.stream():
            writer.write(chunk)
        await run_in_threadpool(writer.commit)  # removes the temp file itself on a mismatch
    except ClientDisconnect:
        writer.abort()
        raise APIError(400, "unexpected EOF") from None
    except BaseException:
        writer.abort()
        raise
    return Response(status_code=201)


routes = [
    Route("/api/blobs/{digest}", head_blob, methods=["HEAD"]),
    Route("/api/blobs/{digest}", create_blob, methods=["POST"]),
]
