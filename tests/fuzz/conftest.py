"""One live Corral for the fuzz tests: a temporary store, the two embedded models, and a
loopback registry for pull/push."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import start_server, stop_server
from tests.registry.test_oci_helpers import start_registry


@pytest.fixture(scope="session")
def fuzz_registry(tmp_path_factory: pytest.TempPathFactory):
    registry = start_registry(tmp_path_factory.mktemp("fuzz-registry"))
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, corral_cache: Path):
    server = start_server(tmp_path_factory.mktemp("fuzz"), {
        "CORRAL_CACHE": str(corral_cache),
        "OLLAMA_KEEP_ALIVE": "-1",
    })
    yield server
    stop_server(server)
