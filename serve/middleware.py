"""Access control in front of every route: CORS, the Host check, bearer tokens, body limits.

Order (outermost first) follows Ollama: CORS, then allowed hosts; Corral adds a request-body
size cap and the access check (serve/auth: the seeds' bearer-token scheme, with scoped keys).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from typing import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.auth.keys import KeyRing
from serve.auth.middleware import AccessMiddleware
from serve.wire import encode

CORS_HEADERS = (
    "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
    "x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, "
    "x-stainless-helper-method, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
    "x-stainless-poll-helper, x-stainless-retry-count, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-timeout, anthropic-version, anthropic-beta, x-api-key"
)
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


def default_origins() -> list[str]:
    origins = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        for scheme in ("http", "https"):
            origins += [f"{scheme}://{host}", f"{scheme}://{host}:*"]
    origins += ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
    origins += ["chrome-extension://*", "moz-extension://*", "safari-web-extension://*"]
    return origins


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _reply(send: Send, status: int, body: bytes = b"", headers: Iterable = ()) -> None:
    head = [(k.encode(), v.encode()) for k, v in headers]
    if body:
        head.append((b"content-type", b"application/json; charset=utf-8"))
    head.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class CORSMiddleware:
    def __init__(self, app: ASGIApp, extra_origins: Iterable[str] = ()):
        self.app = app
        self.patterns = [o.lower() for o in (*default_origins(), *extra_origins)]

    def allowed(self, origin: str) -> bool:
        origin = origin.lower()
        return any(p == "*" or fnmatch.fnmatchcase(origin, p) for p in self.patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            return await self.app(scope, receive, send)
        if not self.allowed(origin):
            return await _reply(send, 403)
        cors = [("access-control-allow-origin", origin), ("vary", "Origin")]
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            cors += [
                ("access-control-allow-methods", CORS_METHODS),
                ("access-control-allow-headers", CORS_HEADERS),
                ("access-control-max-age", "43200"),
            ]
            return await _reply(send, 204, headers=cors)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.encode(), v.encode()) for k, v in cors
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def host_allowed(host: str) -> bool:
    """Ollama's allowedHost: loopback/private/unspecified/local IPs, localhost and local names."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if not host or host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        hostname = socket.gethostname().lower()
        return host == hostname or host.endswith((".localhost", ".local", ".internal"))
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local


class HostMiddleware:
    """Reject foreign Host headers when bound to loopback (DNS-rebinding protection)."""

    def __init__(self, app: ASGIApp, bind_host: str):
        self.app = app
        try:
            self.enabled = ipaddress.ip_address(bind_host).is_loopback
        except ValueError:
            self.enabled = bind_host == "localhost"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http":
            host = _header(scope, b"host")
            if host is not None and not host_allowed(host):
                return await _reply(send, 403)
            if scope["method"] == "OPTIONS":
                return await _reply(send, 204)
        await self.app(scope, receive, send)


class APIKeyMiddleware(AccessMiddleware):
    """Bare bearer keys, each admin (`CORRAL_API_KEY`); serve/auth has the scoped form."""

    def __init__(self, app: ASGIApp, keys: Iterable[str]):
        super().__init__(app, KeyRing(keys))


class BodyLimitMiddleware:
    """Cap request bodies: `blob_limit` for blob uploads, `json_limit` for everything else."""

    def __init__(self, app: ASGIApp, json_limit: int, blob_limit: int):
        self.app = app
        self.json_limit = json_limit
        self.blob_limit = blob_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.blob_limit if scope["path"].startswith("/api/blobs/") else self.json_limit
        declared = _header(scope, b"content-length")
        too_large = encode({"error": "request body too large"})
        if declared and declared.isdigit() and int(declared) > limit:
            return await _reply(send, 413, too_large)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await _reply(send, 413, too_large)


class BodyTooLarge(Exception):
    pass
