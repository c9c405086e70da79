"""The role each route needs: `read` < `infer` < `admin`, plus the few routes that need no key.

Every route the app mounts must be named here; a route that is not falls back to `admin` (the
safe side) and `tests/serve/test_auth_roles.py` fails, so a new route cannot ship unreviewed.
Routes other issues add (`/health`, `/ready`, `/api/openapi.json`, `/v1/responses`) are named
already, whether or not this build mounts them.
"""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    READ = 1
    INFER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> "Role":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r} (read, infer or admin)") from None

    def __str__(self) -> str:
        return self.name.lower()


OPEN = None  # no key needed: liveness and readiness probes, and Ollama's `GET /`
METRICS = "/metrics"  # read, or open with CORRAL_METRICS_OPEN=true

ROUTE_ROLES: dict[str, Role | None] = {
    "/": OPEN,
    "/health": OPEN,
    "/ready": OPEN,
    METRICS: Role.READ,
    "/api/version": Role.READ,
    "/api/tags": Role.READ,
    "/api/ps": Role.READ,
    "/api/show": Role.READ,
    "/api/openapi.json": Role.READ,
    "/v1/models": Role.READ,
    "/v1/models/{model:path}": Role.READ,
    "/api/generate": Role.INFER,
    "/api/chat": Role.INFER,
    "/api/embed": Role.INFER,
    "/api/embeddings": Role.INFER,
    "/v1/chat/completions": Role.INFER,
    "/v1/completions": Role.INFER,
    "/v1/embeddings": Role.INFER,
    "/v1/responses": Role.INFER,
    "/v1/messages": Role.INFER,
    "/api/create": Role.ADMIN,
    "/api/copy": Role.ADMIN,
    "/api/delete": Role.ADMIN,
    "/api/pull": Role.ADMIN,
    "/api/push": Role.ADMIN,
    "/api/blobs/{digest}": Role.ADMIN,
    "/api/debug/faults": Role.ADMIN,
}

# Calls that change what the server holds: each gets one line on the `corral.audit` logger.
AUDITED = frozenset({"/api/create", "/api/copy", "/api/delete", "/api/pull", "/api/push",
                     "/api/blobs/{digest}", "/api/debug/faults"})

# Where a body names models, by route: the JSON fields holding a model name. A key with model
# patterns may only name models they match (create's base and copy's source included).
_NAMED = ("model", "name")
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "/api/show": _NAMED, "/api/generate": _NAMED, "/api/chat": _NAMED, "/api/embed": _NAMED,
    "/api/embeddings": _NAMED, "/v1/chat/completions": _NAMED, "/v1/completions": _NAMED,
    "/v1/embeddings": _NAMED, "/v1/responses": _NAMED, "/v1/messages": _NAMED,
    "/api/delete": _NAMED, "/api/pull": _NAMED, "/api/push": _NAMED,
    "/api/create": ("model", "name", "from"),
    "/api/copy": ("source", "destination"),
    "/api/debug/faults": ("model",),
}
# Where the path names the model (`/v1/models/{model}`).
PATH_MODEL = {"/v1/models/{model:path}": "model"}


def required_role(path: str, metrics_open: bool = False) -> Role | None:
    """The role a route template needs; None when it needs no key; admin when unknown."""
    if path == METRICS and metrics_open:
        return OPEN
    return ROUTE_ROLES.get(path, Role.ADMIN)
