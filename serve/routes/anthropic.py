"""Anthropic compatibility: `POST /v1/messages` (reference §12).

The body becomes an `/api/chat` body run in-process; the reply becomes a message object, or
Anthropic's event stream (`event: <type>` / `data: <json>`), and errors take Anthropic's
shape. As in Ollama (`relax_thinking`), thinking asked of a model that cannot think is dropped
rather than refused, so tools that always enable it (Claude Code) work with any model.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.errors import APIError
from registry.model import get_model
from serve.protocols import anthropic as anth
from serve.protocols.native import NativeReply, call_native, sse_frame, sse_response
from serve.responses import json_response
from serve.routes import generate
from serve.wire import decode_body


def anthropic_error(status: int, message: str) -> Response:
    return json_response(anth.error_body(status, message), status)


async def _relax_thinking(request: Request, native: dict[str, Any]) -> None:
    if native.get("think") in (None, False):
        return
    try:
        model = await run_in_threadpool(get_model, request.app.state.services.store,
                                        native["model"])
        capable = "thinking" in model.capabilities
    except Exception:  # an unknown or unreadable model: the native handler says why
        return
    if not capable:
        del native["think"]


def _stream(reply: NativeReply, converter: anth.MessageStream) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        async for event in reply.events():
            if "error" in event:  # mid-stream: Anthropic's error event, which the SDK raises
                yield sse_frame(anth.error_body(500, str(event["error"])), "error")
                return
            for kind, data in converter.feed(event):
                yield sse_frame(data, kind)
            if event.get("done"):
                return

    return sse_response(frames(), reply)


async def messages(request: Request) -> Response:
    try:
        data = decode_body(await request.body(), "MessagesRequest", anth.MESSAGES_FIELDS)
        native = anth.from_messages_request(data)
    except APIError as err:
        return anthropic_error(err.status, err.message)
    await _relax_thinking(request, native)
    reply = await call_native(generate.chat, request, native)
    if reply.error is not None:
        return anthropic_error(reply.status, reply.error)
    mid = anth.new_id("msg")
    if not native["stream"]:
        return json_response(anth.to_message(mid, data["model"], reply.body or {}))
    converter = anth.MessageStream(mid, data["model"], anth.estimate_input_tokens(data))
    return _stream(reply, converter)


routes = [Route("/v1/messages", messages, methods=["POST"])]
