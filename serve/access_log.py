"""One access line per request, with the request's ID, and the HTTP request counter.

The ID comes from the client's `X-Request-ID` (a router's or gateway's, so one request can be
followed through the fleet) or is made here, and is echoed in the response. Routes that run a
model fill in the scope's `AccessRecord` (model, tokens in/out, time to first token); the line
is written when the response has ended, streamed or not.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.auth.redact import redact

log = logging.getLogger("corral.access")

_VALID_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces: safe in a log line


@dataclass
class AccessRecord:
    request_id: str
    model: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None
    ttft: float | None = None  # seconds from arrival to the first token


def access_record(scope_holder: Any) -> AccessRecord | None:
    """The record of a Request (or a scope), if the access log is in front of it."""
    scope = getattr(scope_holder, "scope", scope_holder)
    return (scope.get("state") or {}).get("access")


def request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            given = value.decode("latin-1").strip()
            if _VALID_ID.match(given):
                return given
    return uuid.uuid4().hex


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Any):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        record = AccessRecord(request_id(scope))
        scope.setdefault("state", {})["access"] = record
        status = 0
        echoed = (b"x-request-id", record.request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), echoed]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._write(scope, record, status or 500, time.perf_counter() - started)

    def _write(self, scope: Scope, record: AccessRecord, status: int, duration: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope.get("method", "")
        self.metrics.http_request(method, route, status)
        client = scope.get("client")
        path = scope.get("path", "")
        if query := scope.get("query_string", b"").decode("latin-1"):
            # with its query, as uvicorn logs it; some clients put credentials there
            path = redact(f"{path}?{query}")
        fields = {
            "request_id": record.request_id, "method": method, "path": path,
            "route": route, "status": status, "model": record.model or None,
            "tokens_in": record.tokens_in, "tokens_out": record.tokens_out,
            "ttft_s": None if record.ttft is None else round(record.ttft, 4),
            "duration_s": round(duration, 4),
            "client": f"{client[0]}:{client[1]}" if client else None,
        }
        text = " ".join(f"{k}={v}" for k, v in fields.items()
                        if v is not None and k not in ("method", "path", "status"))
        log.info('"%s %s" %d %s', method, fields["path"], status, text,
                 extra={"fields": {k: v for k, v in fields.items() if v is not None}})
