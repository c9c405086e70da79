"""`POST /api/debug/faults`: arm or clear injected engine faults (scheduler/faults.py).

Mounted only when `CORRAL_DEBUG_FAULTS=1`, so a production server has no such route at all.
Body: `{"kind": "raise"|"crash"|"stall", "model": name?, "count": n?, "seconds": s?}` arms one;
`{"clear": true}` disarms all. Answers the faults still armed.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.errors import APIError
from scheduler.faults import INJECTOR, KINDS, Fault
from serve.responses import json_response
from serve.wire import decode_body


FIELDS = {"kind": "string", "model": "string", "count": "int", "seconds": "float", "clear": "bool"}


def enabled() -> bool:
    return os.environ.get("CORRAL_DEBUG_FAULTS", "").lower() in ("1", "true", "yes")


async def faults(request: Request) -> Response:
    body = decode_body(await request.body(), "FaultRequest", FIELDS)
    if body.get("clear"):
        INJECTOR.clear()
    else:
        kind = body.get("kind")
        if kind not in KINDS:
            raise APIError(400, f"kind must be one of {', '.join(KINDS)}")
        try:
            fault = Fault(kind=kind, model=body.get("model") or None, count=int(body.get("count", 1)),
                          seconds=float(body.get("seconds", 0.0)))
        except (TypeError, ValueError) as exc:
            raise APIError(400, f"invalid fault: {exc}") from exc
        INJECTOR.arm(fault)
    return json_response({"faults": [asdict(f) for f in INJECTOR.armed()]})


routes = [Route("/api/debug/faults", faults, methods=["POST"])] if enabled() else []
