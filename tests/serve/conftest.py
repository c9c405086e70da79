"""An in-process app over a temporary store, for route tests that need no model runtime."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from registry.store import Store
from serve.app import build_app
from serve.services import Services
from serve.settings import Settings


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture
def app_client(store, tmp_path):
    settings = Settings(models_dir=store.root, cache_dir=tmp_path / "cache", default_models=False)
    app = build_app(settings, Services(settings=settings, store=store))
    with TestClient(app, base_url="http://127.0.0.1:11434") as client:
        yield client
