"""A live server with the fault route mounted (CORRAL_DEBUG_FAULTS=1)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory, corral_cache: Path,
                 request: pytest.FixtureRequest):
    """One per test module; a module's SERVER_ENV adds to (or overrides) its environment."""
    server = start_server(tmp_path_factory.mktemp("faults"), {
        "CORRAL_CACHE": str(corral_cache), "CORRAL_DEBUG_FAULTS": "1",
        "OLLAMA_KEEP_ALIVE": "-1", **getattr(request.module, "SERVER_ENV", {})})
    yield server
    stop_server(server)


def metric(url: str, name: str, model: str) -> float:
    """One model's sample of `name` (labelled model_name, as vLLM does); a missing one fails the
    test, so a renamed metric can never pass as NaN."""
    text = httpx.get(url + "/metrics", timeout=30).text
    m = re.search(rf'^{re.escape(name)}{{[^}}]*model_name="{re.escape(model)}"[^}}]*}} (\S+)$',
                  text, re.M)
    assert m, f"no {name} for {model} in /metrics:\n" + "\n".join(
        ln for ln in text.splitlines() if ln.startswith(name[:8]))[:2000]
    return float(m.group(1))


def wait_kv_full(url: str, model: str, timeout_s: float = 60) -> tuple[float, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        free = metric(url, "corral_kv_blocks_free", model)
        total = metric(url, "corral_kv_blocks_total", model)
        if free == total or time.monotonic() > deadline:
            return free, total
        time.sleep(0.5)
