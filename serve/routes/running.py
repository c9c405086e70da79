"""What is loaded: `GET /api/ps` (reference §4.8) and Prometheus `GET /metrics` (serve/metrics.py)."""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.create import model_details
from scheduler.residency import Residency, Runner
from serve.metrics import CONTENT_TYPE
from serve.responses import json_response
from serve.wire import go_time


def _entry(residency: Residency, runner: Runner) -> dict:
    model = runner.ref.model
    instance = runner.instance
    on_gpu = sum(size for dev, size in runner.placement.allocation.items()
                 if runner.placement.torch_devices[dev].startswith("cuda"))
    details = model_details(model)
    details.pop("context_length", None)
    details.pop("embedding_length", None)
    details["parent_model"] = ""
    expires = datetime.fromtimestamp(residency.expires_at(runner), timezone.utc).astimezone()
    return {
        "name": model.display_name,
        "model": model.display_name,
        "size": runner.size,
        "digest": model.digest,
        "details": details,
        "expires_at": go_time(expires),
        "size_vram": on_gpu,
        "context_length": instance.context_length,
        "devices": runner.placement.device_ids,
    }


async def ps(request: Request) -> Response:
    residency: Residency = request.app.state.services.residency
    runners = residency.all_runners() if residency else []
    entries = [(residency.expires_at(r), _entry(residency, r)) for r in runners]
    entries.sort(key=lambda e: e[0], reverse=True)
    return json_response({"models": [e[1] for e in entries]})


async def metrics(request: Request) -> Response:
    body = request.app.state.metrics.render()
    return Response(body, media_type=CONTENT_TYPE)


routes = [
    Route("/api/ps", ps, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
