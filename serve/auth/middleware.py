"""Who may call what: the key, its role for the route, its model patterns, its limits, the audit.

Order per request: find the route; probes pass; find the key (401 when unknown); check its role
(403); count it against its rate and concurrency limits (429 with Retry-After); read the body of
routes that name models and check every name against the key's patterns (403); run the route;
for calls that change state, write one `corral.audit` line with key id, action, models, result.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.auth.access import SCOPE_KEY, denied_model
from serve.auth.keys import APIKey, KeyRing
from serve.auth.limits import ConcurrencyLimiter, RateLimiter, retry_after
from serve.auth.roles import (AUDITED, MODEL_FIELDS, OPEN, PATH_MODEL, ROUTE_ROLES, Role,
                              required_role)
from serve.wire import encode

audit_log = logging.getLogger("corral.audit")

ANONYMOUS = APIKey(id="-", role=Role.ADMIN)  # an open server: everyone, unlimited


def bearer_token(scope: Scope) -> str | None:
    """`Authorization: Bearer <key>`, or the Anthropic SDK's `x-api-key: <key>`."""
    auth = api_key = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            auth = value.decode("latin-1")
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return api_key.strip() if api_key and api_key.strip() else None


def match_route(scope: Scope) -> tuple[str | None, dict[str, Any]]:
    """The template of the app route this request hits (method aside), and its path params."""
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        match, child = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", None), child.get("path_params", {})
    return None, {}


def body_models(template: str, body: bytes) -> list[str]:
    """Every model name a JSON body names in the route's model fields (the route decodes the
    same bytes with the same parser, so there is no second reading that could disagree)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []  # the route answers 400
    if not isinstance(data, dict):
        return []
    return [v for f in MODEL_FIELDS.get(template, ()) if isinstance(v := data.get(f), str) and v]


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    chunks, messages = [], []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _reply(send: Send, status: int, error: str, headers: Iterable = ()) -> None:
    body = encode({"error": error})
    head = [(k.encode(), v.encode()) for k, v in headers]
    head += [(b"content-type", b"application/json; charset=utf-8"),
             (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class AccessMiddleware:
    def __init__(self, app: ASGIApp, keyring: KeyRing, metrics_open: bool = False,
                 rate_limit: float = 0.0, concurrency: int = 0,
                 rates: RateLimiter | None = None):
        self.app = app
        self.keyring = keyring
        self.metrics_open = metrics_open
        self.rate_limit = rate_limit
        self.concurrency = concurrency
        self.rates = rates or RateLimiter()
        self.in_flight = ConcurrencyLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        template, params = match_route(scope)
        if template is None and scope["path"] in ROUTE_ROLES:
            template = scope["path"]  # a named route this build does not mount (yet): its 404
        # Any other unknown path still needs some key: a stranger learns nothing from it.
        role = required_role(template, self.metrics_open) if template else Role.READ
        if role is OPEN:
            return await self.app(scope, receive, send)
        if not self.keyring.configured:
            key = ANONYMOUS
        else:
            token = bearer_token(scope)
            key = self.keyring.lookup(token) if token else None
            if key is None:
                return await _reply(send, 401, "unauthorized", [("www-authenticate", "Bearer")])
        if key.role < role:
            if template in AUDITED:
                _audit(key, scope, [], "403 denied")
            return await _reply(send, 403, f"forbidden: a {key.role} key may not call "
                                           f"{scope['method']} {scope['path']}")
        limited = key is not ANONYMOUS
        if limited:
            wait = self.rates.take(key.id, self.rate_limit if key.rate_limit is None
                                   else key.rate_limit, key.burst)
            if wait > 0:
                return await _reply(send, 429, f"rate limit exceeded for key {key.id}",
                                    [("retry-after", retry_after(wait))])
            limit = self.concurrency if key.concurrency is None else key.concurrency
            if not self.in_flight.acquire(key.id, limit):
                return await _reply(send, 429, f"too many requests at once for key {key.id}",
                                    [("retry-after", "1")])
        try:
            await self._guarded(scope, receive, send, key, template, params)
        finally:
            if limited:
                self.in_flight.release(key.id)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, key: APIKey,
                       template: str | None, params: dict[str, Any]) -> None:
        scope[SCOPE_KEY] = key
        audited = template in AUDITED
        models: list[str] = []
        if template in PATH_MODEL:
            models.append(str(params.get(PATH_MODEL[template], "")))
        if template in MODEL_FIELDS and (key.models.patterns or audited):
            body, messages = await _read_body(receive)
            receive = _replay(messages, receive)
            models += body_models(template, body)
        for name in models:
            if not key.models.allows(name):
                if audited:
                    _audit(key, scope, models, "403 denied")
                return await _reply(send, 403, denied_model(name).message)
        if not audited:
            return await self.app(scope, receive, send)
        outcome = {"status": 500, "error": False}

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
            elif message["type"] == "http.response.body" and b'"error":' in message.get("body", b""):
                outcome["error"] = True  # a stream that failed after its 200
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            result = f"{outcome['status']}{' error' if outcome['error'] else ''}"
            _audit(key, scope, models, result)


def _audit(key: APIKey, scope: Scope, models: list[str], result: str) -> None:
    audit_log.info("key=%s action=%s model=%s result=%s", key.id,
                   f"{scope['method']} {scope['path']}", ",".join(models) or "-", result)
