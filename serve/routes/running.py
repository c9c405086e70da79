"""What is loaded: `GET /api/ps` (reference §4.8) and Prometheus `GET /metrics`.

An adapter model is listed beside its base with only its adapter's bytes as its size (and its
base as `details.parent_model`): the shared base weights are counted once, on the base's entry.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.create import model_details
from scheduler.adapters import AdapterRunner, lora_requests_info
from scheduler.residency import Residency, Runner
from serve.auth.access import visible
from serve.responses import json_response
from serve.wire import go_time


def _entry(residency: Residency, runner: Runner | AdapterRunner) -> dict:
    model = runner.ref.model
    base = runner.base if isinstance(runner, AdapterRunner) else runner
    instance = base.instance
    on_gpu = sum(size for dev, size in base.placement.allocation.items()
                 if base.placement.torch_devices[dev].startswith("cuda"))
    details = model_details(model)
    details.pop("context_length", None)
    details.pop("embedding_length", None)
    details["parent_model"] = base.ref.name if base is not runner else ""
    if base is not runner:
        on_gpu = runner.size if on_gpu else 0
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
        "devices": base.placement.device_ids,
    }


async def ps(request: Request) -> Response:
    residency: Residency = request.app.state.services.residency
    runners = residency.all_runners() + list(residency.adapters.values()) if residency else []
    entries = [(residency.expires_at(r), _entry(residency, r)) for r in runners]
    entries.sort(key=lambda e: e[0], reverse=True)
    return json_response({"models": visible(request.scope, [e[1] for e in entries])})


def _metrics(residency: Residency | None) -> bytes:
    registry = CollectorRegistry()
    labels = ["model", "device"]
    gauges = {
        "running": Gauge("corral_sequences_running", "Sequences decoding", labels, registry=registry),
        "waiting": Gauge("corral_sequences_waiting", "Sequences waiting to start", labels,
                         registry=registry),
        "free_blocks": Gauge("corral_kv_blocks_free", "Free KV cache blocks", labels,
                             registry=registry),
        "total_blocks": Gauge("corral_kv_blocks_total", "KV cache blocks", labels,
                              registry=registry),
        "prefix_cache_hit_tokens": Gauge("corral_prefix_cache_hit_tokens",
                                         "Prompt tokens served from the prefix cache", labels,
                                         registry=registry),
        "num_preemptions": Gauge("corral_preemptions", "Sequences preempted for KV room", labels,
                                 registry=registry),
    }
    in_use = Gauge("corral_model_requests_in_flight", "Requests holding the model", labels,
                   registry=registry)
    used = Gauge("corral_device_memory_reserved_bytes", "Memory placed models hold", ["device"],
                 registry=registry)
    lora_info = Gauge("vllm:lora_requests_info", "Running stats on lora requests.",
                      ["model_name", "running_lora_adapters", "waiting_lora_adapters", "max_lora"],
                      registry=registry)
    for runner in residency.all_runners() if residency else []:
        key = (runner.ref.name, ",".join(runner.placement.device_ids))
        in_use.labels(*key).set(runner.refcount)
        engine = getattr(runner.instance, "engine", None)
        if engine is not None:
            stats = engine.stats()
            for field, gauge in gauges.items():
                gauge.labels(*key).set(getattr(stats, field))
            if stats.max_loras:
                lora_info.labels(model_name=runner.ref.name, **lora_requests_info(stats)).set(time.time())
    for device in residency.inventory.devices if residency else []:
        used.labels(device.id).set(residency.inventory.reserved(device.id))
    return generate_latest(registry)


async def metrics(request: Request) -> Response:
    body = _metrics(request.app.state.services.residency)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/api/ps", ps, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
