"""The role table names every route the app mounts; a new route without a role fails here."""

from __future__ import annotations

from serve.app import build_app
from serve.auth.roles import AUDITED, MODEL_FIELDS, OPEN, ROUTE_ROLES, Role, required_role
from serve.routes import debug
from serve.services import Services
from serve.settings import Settings


def mounted_paths(tmp_path) -> set[str]:
    settings = Settings(models_dir=tmp_path / "m", cache_dir=tmp_path / "c", default_models=False)
    app = build_app(settings, Services(settings=settings, store=None))  # type: ignore[arg-type]
    return {route.path for route in app.routes} | {r.path for r in debug.routes}


def test_every_mounted_route_has_a_role(tmp_path):
    missing = sorted(mounted_paths(tmp_path) - set(ROUTE_ROLES))
    assert not missing, f"routes without a role in serve/auth/roles.py: {missing}"


def test_the_table_as_the_issue_states_it():
    assert {p for p, r in ROUTE_ROLES.items() if r is OPEN} == {"/", "/health", "/ready"}
    assert required_role("/metrics") is Role.READ and required_role("/metrics", True) is OPEN
    for path in ("/api/create", "/api/copy", "/api/delete", "/api/pull", "/api/push",
                 "/api/blobs/{digest}"):
        assert ROUTE_ROLES[path] is Role.ADMIN and path in AUDITED
    for path in ("/api/generate", "/api/chat", "/api/embed", "/v1/chat/completions",
                 "/v1/messages"):
        assert ROUTE_ROLES[path] is Role.INFER
    assert required_role("/api/some-future-route") is Role.ADMIN  # unnamed: the safe side
    assert set(MODEL_FIELDS) <= set(ROUTE_ROLES) and AUDITED <= set(ROUTE_ROLES)
