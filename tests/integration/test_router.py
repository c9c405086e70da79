"""Two live Corral servers behind vLLM's router (`vllm-router`, PyPI, in the test extra).

The router health-checks Corral's /ready and forwards `/v1/chat/completions`, `/v1/completions`
and `/v1/models`; requests spread over both servers (round robin), and a server that gets SIGTERM
leaves the rotation without a single request failing. The spread is printed for the report.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from bench.procs import ManagedServer, free_port
from tests.integration.conftest import spawn_server, stop_server, wait_ready
from tests.integration.ops_helpers import GEMMA, Stream, counting, metric_samples, total, wait_first_lines

pytestmark = pytest.mark.slow


def router_binary() -> str:
    found = Path(sys.executable).parent / "vllm-router"
    path = str(found) if found.exists() else shutil.which("vllm-router")
    assert path, "vllm-router is missing: `make install-test` installs it (the test extra)"
    return path


@pytest.fixture
def fleet(tmp_path, corral_cache):
    servers = []
    router = None
    try:
        for name in ("a", "b"):  # both start at once: their preloads overlap
            servers.append(spawn_server(tmp_path / name, {
                "CORRAL_CACHE": str(corral_cache), "CORRAL_PRELOAD": GEMMA,
                "CORRAL_DRAIN_TIMEOUT": "600"}))
        for server in servers:
            wait_ready(server, 300)
        port = free_port()
        router = ManagedServer("vllm-router", [
            router_binary(), "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *[s.url for s in servers], "--policy", "round_robin",
            "--health-check-endpoint", "/ready", "--health-check-interval-secs", "1",
            "--health-failure-threshold", "1", "--health-success-threshold", "1",
            "--worker-startup-check-interval", "1", "--log-level", "info",
        ], dict(os.environ), port, tmp_path / "router.log").start()
        router.wait_ready("/v1/models", timeout_s=180)
        yield router, servers
    finally:
        if router is not None:
            router.stop()
        for server in servers:
            stop_server(server)


def _requests(url: str, n: int) -> list[int]:
    """n requests through the router, alternating chat and completions; their statuses."""
    statuses = []
    for i in range(n):
        if i % 2 == 0:
            reply = httpx.post(url + "/v1/chat/completions", timeout=300, json={
                "model": GEMMA, "messages": [{"role": "user", "content": f"Say {i}"}],
                "max_tokens": 3})
            ok = reply.status_code == 200 and reply.json()["choices"][0]["message"] is not None
        else:
            reply = httpx.post(url + "/v1/completions", timeout=300, json={
                "model": GEMMA, "prompt": f"{i}, {i + 1},", "max_tokens": 3})
            ok = reply.status_code == 200 and reply.json()["choices"][0]["text"] is not None
        statuses.append(reply.status_code if ok else -reply.status_code)
    return statuses


def _served(server) -> float:
    return total(metric_samples(server.url), "vllm:request_success_total", model_name=GEMMA)


def _routed_lines(log: str) -> list[dict]:
    """The access lines of /v1 requests (what the router forwarded) in a text-format log."""
    out = []
    for line in log.splitlines():
        m = re.search(r'corral\.access: "POST (/v1/\S+)" (\d+) ', line)
        if m:
            out.append({"route": m.group(1), "status": int(m.group(2))})
    return out


def test_router_spreads_requests_and_skips_a_draining_server(fleet):
    router, (a, b) = fleet
    models = httpx.get(router.url + "/v1/models", timeout=30).json()
    assert GEMMA in [m["id"] for m in models["data"]], models

    before = [_served(a), _served(b)]
    statuses = _requests(router.url, 8)
    assert statuses == [200] * 8, statuses
    spread = [_served(a) - before[0], _served(b) - before[1]]
    print("\nrouter spread of 8 requests (a, b):", spread)
    assert sum(spread) == 8 and min(spread) >= 1, spread

    # B drains: a stream on it keeps running, and the router stops sending it anything
    held = Stream(b.url + "/api/generate", counting(24)).start()
    wait_first_lines([held])
    routed_before = len(_routed_lines(b.log()))
    b.process.terminate()
    assert httpx.get(b.url + "/ready", timeout=30).status_code == 503
    a_before = _served(a)
    statuses = _requests(router.url, 8)
    assert statuses == [200] * 8, (statuses, router.log_tail())
    to_a = _served(a) - a_before
    late = _routed_lines(b.log())[routed_before:]
    print("after SIGTERM on b: 8 requests -> a", to_a, "; b got", late)
    assert to_a == 8, (to_a, late)
    assert [x for x in late if x["status"] == 200] == [], late
    held.join(600)
    assert held.last.get("done") is True, held.lines[-2:]
    assert b.process.wait(120) == 0, b.log()[-4000:]
