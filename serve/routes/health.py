"""Probes: `GET /health` (liveness) and `GET /ready` (readiness), beside Ollama's `GET /`.

/health fails only for what a restart cures: an engine thread that died, a step running past
CORRAL_STALL_TIMEOUT, an event loop that stopped beating. /ready fails while start-up work is
pending and from the first drain signal on; failed start-up steps are listed, not fatal, so one
bad preload does not keep the pod out of service for every other model.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serve.lifecycle import Lifecycle
from serve.responses import json_response


def liveness_problems(request: Request) -> list[str]:
    lifecycle: Lifecycle = request.app.state.lifecycle
    services = request.app.state.services
    stall = services.settings.stall_timeout
    problems = []
    lag = time.monotonic() - lifecycle.last_beat
    if lag > stall:
        problems.append(f"the event loop did not run for {lag:.0f} s")
    residency = services.residency
    for runner in residency.all_runners() if residency else []:
        engine = getattr(runner.instance, "engine", None)
        if engine is None:
            continue
        health = engine.health()
        if not health.alive:
            problems.append(f"the engine thread of {runner.ref.name} died: "
                            f"{health.error or 'it stopped'}")
        elif health.step_seconds > stall:
            problems.append(f"the engine of {runner.ref.name} is stuck: one step has run for "
                            f"{health.step_seconds:.0f} s (CORRAL_STALL_TIMEOUT is {stall:g} s)")
    return problems


async def health(request: Request) -> Response:
    problems = liveness_problems(request)
    if problems:
        return json_response({"status": "unhealthy", "error": "; ".join(problems),
                              "reasons": problems}, 503)
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    lifecycle: Lifecycle = request.app.state.lifecycle
    if lifecycle.draining:
        return json_response({"status": "draining", "error": "server is shutting down"}, 503)
    if not lifecycle.started:
        return json_response({"status": "starting", "pending": list(lifecycle.pending),
                              "failed": dict(lifecycle.failed)}, 503)
    return json_response({"status": "ready", "failed": dict(lifecycle.failed)})


routes = [
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/ready", ready, methods=["GET", "HEAD"]),
]
