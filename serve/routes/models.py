"""Model management: tags, show, create, copy, delete (reference §4)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.templates.gotemplate.errors import TemplateError
from backends.templates.template import PromptTemplate
from registry.create import (copy_model, create_model, delete_model, list_models,
                             request_from_body)
from registry.errors import APIError
from registry.model import get_model
from registry.show import show_model
from serve.auth.access import require_model, visible
from serve.responses import empty_ok, json_response, stream_events
from serve.options import typed_options
from serve.wire import decode_body, model_field

SHOW_FIELDS = {"model": "string", "name": "string", "verbose": "bool", "system": "string",
               "template": "string", "options": "object"}
CREATE_FIELDS = {
    "model": "string", "name": "string", "from": "string", "files": "object",
    "adapters": "object", "template": "string", "license": "license", "system": "string",
    "parameters": "object", "messages": "messages", "quantize": "string",
    "quantization": "string", "stream": "bool", "requires": "string", "renderer": "string",
    "parser": "string", "modelfile": "string", "path": "string",
}
COPY_FIELDS = {"source": "string", "destination": "string"}
DELETE_FIELDS = {"model": "string", "name": "string"}


def validate_template(text: str) -> None:
    """create's template check: 400 `template error: <Go parse error>`."""
    try:
        PromptTemplate.parse(text)
    except TemplateError as err:
        raise APIError(400, f"template error: {err}") from None


def _services(request: Request) -> Any:
    return request.app.state.services


async def _body(request: Request, struct: str, fields: dict[str, str]) -> dict[str, Any]:
    return decode_body(await request.body(), struct, fields)


async def tags(request: Request) -> Response:
    models = await run_in_threadpool(list_models, _services(request).store)
    return json_response({"models": visible(request.scope, models)})


async def show(request: Request) -> Response:
    body = await _body(request, "ShowRequest", SHOW_FIELDS)
    typed_options(body.get("options"))
    name = model_field(body)
    if not name:
        raise APIError(400, "model is required")
    info = await run_in_threadpool(
        show_model, _services(request).store, name, verbose=bool(body.get("verbose")),
        system=body.get("system"), options=body.get("options"),
    )
    return json_response(info)


async def _iterate(sync_iter: Iterator[dict]) -> AsyncIterator[dict]:
    """Drive a blocking generator (file I/O, hashing) from a worker thread, one step at a time."""
    sentinel = object()
    while (item := await run_in_threadpool(next, sync_iter, sentinel)) is not sentinel:
        yield item


async def create(request: Request) -> Response:
    body = await _body(request, "CreateRequest", CREATE_FIELDS)
    for key in ("files", "adapters"):
        if any(not isinstance(v, str) for v in (body.get(key) or {}).values()):
            raise APIError(400, f"json: cannot unmarshal into Go struct field CreateRequest.{key} "
                                "of type map[string]string")
    services = _services(request)
    req = await run_in_threadpool(request_from_body, services.store, body, services.paths)
    for name in (req.model, req.from_):  # the Modelfile's FROM, now parsed, included
        require_model(request.scope, name)
    progress = await run_in_threadpool(
        create_model, services.store, req, noprune=services.settings.noprune,
        validate_template=validate_template, detect_template=services.detect_template,
        pull=services.pull_for_create,
    )
    return await stream_events(_iterate(progress), stream=req.stream)


async def copy(request: Request) -> Response:
    body = await _body(request, "CopyRequest", COPY_FIELDS)
    source, destination = body.get("source") or "", body.get("destination") or ""
    await run_in_threadpool(copy_model, _services(request).store, source, destination)
    return empty_ok()


async def delete(request: Request) -> Response:
    body = await _body(request, "DeleteRequest", DELETE_FIELDS)
    services = _services(request)
    name = model_field(body)
    try:
        model = await run_in_threadpool(get_model, services.store, name)
    except APIError:
        model = None  # delete_model reports the invalid or unknown name
    await run_in_threadpool(delete_model, services.store, name)
    if model is not None:
        # A copy of the model under another name is the same loaded model: it stays.
        if model.digest not in await run_in_threadpool(services.store.manifest_digests):
            await services.unload(model)
        request.app.state.metrics.forget(model.display_name)
    return empty_ok()


routes = [
    Route("/api/tags", tags, methods=["GET", "HEAD"]),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/create", create, methods=["POST"]),
    Route("/api/copy", copy, methods=["POST"]),
    Route("/api/delete", delete, methods=["DELETE"]),
]
