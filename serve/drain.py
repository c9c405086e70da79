"""Graceful drain on SIGTERM/SIGINT, as a rollout or a scale-down needs it.

The first signal turns /ready 503 at once and refuses new work (inference, pulls, pushes,
creates, blob uploads) with 503 "server is shutting down; retry on another instance" and
`Connection: close`; everything else (listings, probes, /metrics) still answers. Work in flight
runs on for up to CORRAL_DRAIN_TIMEOUT seconds; what is left then is ended by its engine with an
error line, and a pull keeps its partial file for the next start to resume. Then the engines
stop and the process exits 0. A second signal exits at once with 128+signal. The store is never
half-written either way: blobs and manifests are renamed into place only when complete.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.errors import APIError
from serve.lifecycle import Lifecycle
from serve.protocols import anthropic as anth
from serve.protocols import openai as oai
from serve.wire import encode

log = logging.getLogger("corral.drain")

SHUTTING_DOWN = "server is shutting down; retry on another instance"
DRAIN_TIMED_OUT = "server is shutting down: the drain timeout ran out before this request finished"

# Work a drain waits for and refuses once it has begun (POST only).
WORK_PATHS = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/pull", "/api/push",
    "/api/create", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages",
    "/v1/responses",
})
EXIT_GRACE_S = 20.0  # after the drain: the most that stopping engines and sockets may take


def is_work(scope: Scope) -> bool:
    path = scope.get("path", "")
    return scope.get("method") == "POST" and (path in WORK_PATHS or path.startswith("/api/blobs/"))


def refusal_body(path: str) -> bytes:
    """503 in the shape the path's clients parse: Anthropic's, OpenAI's or Ollama's."""
    if path == "/v1/messages":
        return encode(anth.error_body(503, SHUTTING_DOWN))
    if path.startswith("/v1/"):
        return encode(oai.error_body(503, SHUTTING_DOWN))
    return encode({"error": SHUTTING_DOWN})


class DrainMiddleware:
    """Counts work in flight for the drain; refuses new work once the drain has begun."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle):
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_work(scope):
            return await self.app(scope, receive, send)
        if self.lifecycle.draining:
            body = refusal_body(scope["path"])
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body})
            return
        self.lifecycle.work_started()
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.work_finished()


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the drain in place of its own signal handling."""

    def __init__(self, config: uvicorn.Config, app, drain_timeout: float):
        super().__init__(config)
        self.corral_app = app
        self.drain_timeout = drain_timeout
        self.signalled: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes: set flags, hand the rest to the loop.
        if self.signalled is not None:
            log.warning("second signal %s: exiting now", signal.Signals(sig).name)
            logging.shutdown()
            os._exit(128 + sig)
        self.signalled = sig
        lifecycle: Lifecycle = self.corral_app.state.lifecycle
        lifecycle.draining = True
        if self.loop is None:  # not serving yet: nothing to drain
            self.should_exit = True
            return
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self.drain()))

    async def drain(self) -> None:
        lifecycle: Lifecycle = self.corral_app.state.lifecycle
        started = time.monotonic()
        log.info("drain: %s received; not ready; waiting up to %g s for %d requests in flight",
                 signal.Signals(self.signalled).name, self.drain_timeout, lifecycle.in_flight)
        if not await lifecycle.wait_idle(self.drain_timeout):
            log.warning("drain: timeout after %g s; ending %d requests", self.drain_timeout,
                        lifecycle.in_flight)
            for engine in self._engines():
                engine.fail_requests(APIError(503, DRAIN_TIMED_OUT))
            await lifecycle.wait_idle(5.0)  # their error lines are written
        log.info("drain: done after %.2f s (%d left); stopping", time.monotonic() - started,
                 lifecycle.in_flight)
        _exit_after(EXIT_GRACE_S)
        self.should_exit = True  # uvicorn closes sockets, then the lifespan stops the engines

    def _engines(self) -> list:
        residency = getattr(self.corral_app.state, "services", None)
        residency = residency.residency if residency is not None else None
        runners = residency.all_runners() if residency is not None else []
        return [r.instance.engine for r in runners if getattr(r.instance, "engine", None)]


def _exit_after(seconds: float) -> None:
    """A shutdown that hangs (a stuck kernel, a blocked transfer) still ends in exit 0."""
    def watchdog() -> None:
        time.sleep(seconds)
        log.warning("drain: shutdown took over %g s; exiting", seconds)
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watchdog, name="drain-watchdog", daemon=True).start()
