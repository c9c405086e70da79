"""A flood of idle connections cannot starve real clients: the server raises its fd soft limit
to the hard one, so 1,500 sockets that never send a byte leave room for a real request."""

from __future__ import annotations

import resource
import socket

import httpx
import pytest

from tests.integration.conftest import start_server, stop_server

pytestmark = pytest.mark.slow
IDLE = 1500


def test_idle_connection_flood_leaves_room_for_real_clients(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE + 500:
        pytest.fail(f"the hard fd limit {hard} is too low for this test")
    # the server starts with the common default soft limit, as under most init systems
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        server = start_server(tmp_path, {"CORRAL_NO_DEFAULT_MODELS": "1"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # room for our own sockets
    host, port = server.url.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            sockets.append(socket.create_connection((host, int(port)), timeout=10))
        r = httpx.get(server.url + "/api/version", timeout=30)
        assert r.status_code == 200, r.text
        assert httpx.get(server.url + "/api/tags", timeout=30).status_code == 200
    finally:
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        stop_server(server)
    assert "Too many open files" not in server.log(), server.log()[-3000:]
