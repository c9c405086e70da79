"""OpenAI compatibility: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
`/v1/models` (reference §12), and `/v1/responses` (stateless, as in Ollama).

Each route rewrites its body into a native request, runs the native handler in-process and
translates the reply: JSON to JSON, NDJSON to server-sent events ending in `data: [DONE]`,
native errors to OpenAI's error object with the same status.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.errors import APIError
from serve.protocols import openai as oai
from serve.protocols import responses as resp
from serve.protocols.native import Handler, NativeReply, call_native, sse_frame, sse_response
from serve.responses import json_response
from serve.routes import embed, generate, models
from serve.wire import decode_body

DONE = b"data: [DONE]\n\n"


def openai_error(status: int, message: str) -> Response:
    return json_response(oai.error_body(status, message), status)


async def _translated(request: Request, struct: str, fields: dict[str, str],
                      translate: Callable[[dict], Any]) -> tuple[dict, Any]:
    data = decode_body(await request.body(), struct, fields)
    return data, translate(data)


def _include_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


async def _run(request: Request, handler: Handler, native: dict) -> NativeReply | Response:
    reply = await call_native(handler, request, native)
    if reply.error is not None:
        return openai_error(reply.status, reply.error)
    return reply


def _stream(reply: NativeReply, to_chunks: Callable[[dict], list[dict]]) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        async for event in reply.events():
            if "error" in event:  # mid-stream: the SDK raises on a payload with `error`
                yield sse_frame(oai.error_body(500, str(event["error"])))
                return
            for chunk in to_chunks(event):
                yield sse_frame(chunk)
            if event.get("done"):
                break
        yield DONE

    return sse_response(frames(), reply)


async def chat_completions(request: Request) -> Response:
    try:
        data, native = await _translated(request, "ChatCompletionRequest", oai.CHAT_FIELDS,
                                         oai.from_chat_request)
    except APIError as err:
        return openai_error(err.status, err.message)
    reply = await _run(request, generate.chat, native)
    if isinstance(reply, Response):
        return reply
    cid = oai.chat_id()
    if not native["stream"]:
        return json_response(oai.to_chat_completion(cid, reply.body or {}))
    return _stream(reply, oai.ChatStream(cid, _include_usage(data)).feed)


async def completions(request: Request) -> Response:
    try:
        data, native = await _translated(request, "CompletionRequest", oai.COMPLETION_FIELDS,
                                         oai.from_completion_request)
    except APIError as err:
        return openai_error(err.status, err.message)
    reply = await _run(request, generate.generate, native)
    if isinstance(reply, Response):
        return reply
    cid = oai.completion_id()
    if not native["stream"]:
        return json_response(oai.to_completion(cid, reply.body or {}))
    include_usage = _include_usage(data)
    return _stream(reply, lambda event: oai.completion_chunks(cid, event, include_usage))


async def responses(request: Request) -> Response:
    try:
        data, native = await _translated(request, "ResponsesRequest", resp.RESPONSES_FIELDS,
                                         resp.from_responses_request)
    except APIError as err:
        return openai_error(err.status, err.message)
    reply = await _run(request, generate.chat, native)
    if isinstance(reply, Response):
        return reply
    envelope = resp.ResponseObject(resp.response_id(), data)
    if not native["stream"]:
        return json_response(resp.to_response(envelope, reply.body or {}))
    events = resp.ResponseStream(envelope)

    async def frames() -> AsyncIterator[bytes]:  # no [DONE]: the stream ends after completed
        for kind, event in events.start():
            yield sse_frame(event, kind)
        async for native_event in reply.events():
            if "error" in native_event:
                yield sse_frame({"type": "error", "sequence_number": events.sequence,
                                 "message": str(native_event["error"]), "code": None,
                                 "param": None}, "error")
                return
            for kind, event in events.feed(native_event):
                yield sse_frame(event, kind)
            if native_event.get("done"):
                break

    return sse_response(frames(), reply)


async def embeddings(request: Request) -> Response:
    try:
        data, (native, encoding) = await _translated(request, "EmbedRequest", oai.EMBED_FIELDS,
                                                     oai.from_embed_request)
    except APIError as err:
        return openai_error(err.status, err.message)
    reply = await _run(request, embed.embed, native)
    if isinstance(reply, Response):
        return reply
    return json_response(oai.to_embedding_list(native["model"], reply.body or {}, encoding))


async def list_models(request: Request) -> Response:
    reply = await _run(request, models.tags, {})
    if isinstance(reply, Response):
        return reply
    return json_response(oai.to_model_list(reply.body or {}))


async def retrieve_model(request: Request) -> Response:
    name = request.path_params["model"]
    reply = await _run(request, models.show, {"model": name})
    if isinstance(reply, Response):
        return reply
    return json_response(oai.to_model(name, (reply.body or {}).get("modified_at")))


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
