"""The compatibility layers' way into the native API: a rewritten body, handled in-process.

As Ollama's middleware does, `/v1` and `/v1/messages` rewrite the request into a native body,
run the native handler over it, and translate what comes back. The native handler's reply is
read here as plain data: a JSON object with its status, or the NDJSON stream as dicts. Closing
the stream (a client gone, or the last event read) closes the native stream, so the engine
sequence is aborted and the model lease released just as on `/api/chat`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from registry.errors import APIError
from serve.wire import encode

log = logging.getLogger("corral.serve")

SSE_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache"}

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class NativeReply:
    """A native handler's reply: `body` for JSON replies, `stream` for NDJSON ones."""

    status: int
    body: dict[str, Any] | None = None
    stream: AsyncIterator[dict[str, Any]] | None = None

    @property
    def error(self) -> str | None:
        """The native error text when the reply is a failure (any non-200 status)."""
        if self.status == 200:
            return None
        body = self.body or {}
        return str(body.get("error") or body or f"status {self.status}")

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The stream's events, or the one JSON body as a single event."""
        if self.stream is None:
            yield self.body or {}
            return
        async for event in self.stream:
            yield event

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


def native_request(request: Request, body: dict[str, Any]) -> Request:
    """A request with the same scope (app, headers, client) but `body` as its JSON body."""
    raw = json.dumps(body).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await request.receive()  # after the body: the client's disconnect

    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope.get("headers", [])
                        if k not in (b"content-length", b"content-encoding")]
    scope["headers"].append((b"content-length", str(len(raw)).encode()))
    return Request(scope, receive)


async def call_native(handler: Handler, request: Request, body: dict[str, Any]) -> NativeReply:
    """Run `handler` over `body`; errors it raises come back as replies with their status."""
    try:
        response = await handler(native_request(request, body))
    except APIError as err:
        return NativeReply(err.status, {"error": err.message})
    except Exception as err:  # the same 500 the app's handler would give, but translatable
        log.exception("native handler failed under %s", request.url.path)
        return NativeReply(500, {"error": str(err) or type(err).__name__})
    if isinstance(response, StreamingResponse):
        return NativeReply(response.status_code, stream=ndjson_events(response.body_iterator))
    try:
        data = json.loads(response.body) if response.body else {}
    except ValueError:
        data = {"error": response.body.decode("utf-8", errors="replace")}
    if not isinstance(data, dict):
        data = {"error": str(data)} if response.status_code != 200 else {}
    return NativeReply(response.status_code, data)


async def ndjson_events(chunks: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """NDJSON byte chunks as dicts; closing this closes `chunks` (and the native stream)."""
    buffer = b""
    try:
        async for chunk in chunks:
            buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buffer.strip():
            yield json.loads(buffer)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def sse_frame(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: `event: <type>` (optional) and `data: <json>`."""
    head = f"event: {event}\n".encode() if event else b""
    payload = data if isinstance(data, bytes) else encode(data)
    return head + b"data: " + payload + b"\n\n"


def sse_response(frames: AsyncIterator[bytes], reply: NativeReply) -> StreamingResponse:
    """Stream `frames`; the native stream is closed however the response ends."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for frame in frames:
                yield frame
        finally:
            await frames.aclose()  # type: ignore[attr-defined]
            await reply.aclose()

    return StreamingResponse(body(), media_type=SSE_TYPE, headers=SSE_HEADERS)


_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def unix_seconds(stamp: Any) -> int:
    """Unix seconds of a Go RFC3339(Nano) time string; now when absent or unreadable."""
    match = _GO_TIME.match(stamp) if isinstance(stamp, str) else None
    if not match:
        return int(time.time())
    base, frac, zone = match.groups()
    text = base + (frac or "")[:7] + ("+00:00" if zone == "Z" else zone)
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return int(time.time())
