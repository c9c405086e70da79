"""What routes ask of the request's key: may it name this model, which listing rows may it see."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from registry.errors import APIError
from serve.auth.keys import APIKey

SCOPE_KEY = "corral.key"


def key_of(scope: Mapping[str, Any]) -> APIKey | None:
    """The key the access middleware let this request in with; None on an open server."""
    return scope.get(SCOPE_KEY)


def denied_model(name: str) -> APIError:
    return APIError(403, f'this key may not use model "{name}"')


def require_model(scope: Mapping[str, Any], name: str) -> None:
    key = key_of(scope)
    if name and key is not None and not key.models.allows(name):
        raise denied_model(name)


def visible(scope: Mapping[str, Any], rows: Iterable[dict], field: str = "name") -> list[dict]:
    """Listing rows (tags, ps, /v1/models) whose `field` the key's model patterns allow."""
    key = key_of(scope)
    rows = list(rows)
    if key is None or not key.models.patterns:
        return rows
    return [row for row in rows if key.models.allows(str(row.get(field, "")))]
