"""The fake streaming server on a free loopback port, one per test."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

FAKES_PATH = Path(__file__).with_name("fakes.py")


def _load_fakes():
    name = "corral_bench_test_fakes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FAKES_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


fakes = _load_fakes()


@pytest.fixture
def fake_state():
    return fakes.FakeState()


@pytest.fixture
def fake_url(fake_state) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fakes.build_app(fake_state), host="127.0.0.1", port=port,
                                           log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake server did not start")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def fuzz_registry_for_soak(tmp_path_factory):
    """A loopback registry the soak pushes to once and pulls from again and again."""
    from tests.registry.test_oci_helpers import start_registry

    registry = start_registry(tmp_path_factory.mktemp("soak-registry"))
    yield registry
    registry.stop()
