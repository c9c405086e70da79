"""`POST /api/embed` and the legacy `POST /api/embeddings` (reference §2.3, §2.4)."""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.threads import in_own_thread
from registry.errors import APIError
from registry.model import Model, ModelNotFoundError, get_model
from scheduler.instances import ModelInstance
from serve import requests as req
from serve.access_log import access_record
from serve.options import resolve_options, typed_options
from serve.wire import decode_body, model_field
from serve.responses import json_response


async def _model(request: Request, name: str) -> Model:
    record = access_record(request)
    if record is not None:
        record.model = name
    try:
        return await run_in_threadpool(get_model, request.app.state.services.store, name)
    except ModelNotFoundError:
        raise APIError(404, f'model "{name}" not found, try pulling it first') from None


def _embed(instance: ModelInstance, model: Model, texts: list[str], **kwargs: Any) -> Any:
    if instance.embedder is None:
        raise APIError(400, f"{model.name} does not support embedding")
    with instance.embed_lock:
        return instance.embedder.embed(texts, **kwargs)


async def embed(request: Request) -> Response:
    started = time.perf_counter_ns()
    services = request.app.state.services
    body = decode_body(await request.body(), "EmbedRequest", req.EMBED_FIELDS)
    typed_options(body.get("options"))  # wrong types are 400s even when nothing is embedded
    name = model_field(body)
    if not name:
        raise APIError(404, "model '' not found")
    raw_input = body.get("input")
    if raw_input is None or raw_input == "":
        texts: list[str] = []
    elif isinstance(raw_input, str):
        texts = [raw_input]
    elif isinstance(raw_input, list) and all(isinstance(t, str) for t in raw_input):
        texts = raw_input
    else:
        raise APIError(400, "invalid input type")
    keep_alive = req.keep_alive(body)
    model = await _model(request, name)
    options = resolve_options(model.params, body.get("options"), services.settings.context_length,
                              **services.settings.option_ceilings())
    async with await services.acquire(model, options.runner, keep_alive) as lease:
        loaded = time.perf_counter_ns()
        if not texts:
            return json_response({"model": name, "embeddings": []})
        dims = body.get("dimensions") or None
        result = await in_own_thread(
            _embed, lease.instance, model, texts, truncate=body.get("truncate") is not False,
            dimensions=dims if dims and dims > 0 else None, normalize=True)
    record = access_record(request)
    if record is not None:
        record.tokens_in = result.prompt_eval_count
    return json_response({
        "model": name,
        "embeddings": result.embeddings,
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": loaded - started,
        "prompt_eval_count": result.prompt_eval_count,
    })


async def embeddings(request: Request) -> Response:
    services = request.app.state.services
    body = decode_body(await request.body(), "EmbeddingRequest", req.EMBEDDINGS_FIELDS)
    typed_options(body.get("options"))
    name = model_field(body)
    if not name:
        raise APIError(400, "model is required")
    keep_alive = req.keep_alive(body)
    model = await _model(request, name)
    options = resolve_options(model.params, body.get("options"), services.settings.context_length,
                              **services.settings.option_ceilings())
    async with await services.acquire(model, options.runner, keep_alive) as lease:
        prompt = body.get("prompt") or ""
        if not prompt:
            return json_response({"embedding": []})
        result = await in_own_thread(
            _embed, lease.instance, model, [prompt], truncate=True, normalize=False)
    return json_response({"embedding": result.embeddings[0]})


routes = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
]
