"""Residency on a live server with two small pseudo-devices and three models that don't all fit."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from serve.cli.main import main as cli
from tests.integration.conftest import start_server, stop_server

pytestmark = pytest.mark.slow

MODELS = ["gemma3:270m", "mario:latest", "luigi:latest"]


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, corral_cache):
    # Each gemma3 instance (packed weights) is estimated at ~0.85 GiB at num_ctx 4096: one per
    # 1.2 GiB device (80% rule), never two.
    server = start_server(tmp_path_factory.mktemp("residency"), {
        "CORRAL_DEVICES": "cpu:1.2GiB,cpu:1.2GiB", "CORRAL_CACHE": str(corral_cache)})
    for name, system in (("mario", "You are Mario."), ("luigi", "You are Luigi.")):
        r = httpx.post(server.url + "/api/create", timeout=120, json={
            "model": name, "from": "gemma3:270m", "system": system, "stream": False})
        assert r.json() == {"status": "success"}
    yield server
    stop_server(server)


def loaded(server) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(server.url + "/api/ps").json()["models"]}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled_rss(pid: int, timeout: float = 15) -> int:
    """RSS once it stops falling: a model leaves /api/ps when it is detached, and its memory
    is freed by a task after that (scheduler/residency.py `_begin_unload`)."""
    last, deadline = rss_bytes(pid), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_bytes(pid)
        if last - now < 16 * 2**20:
            return now
        last = now
    return last


async def _stream(client: httpx.AsyncClient, url: str, model: str, i: int) -> int:
    body = {"model": model, "prompt": f"Tell story {i}.", "raw": True,
            "options": {"temperature": 0, "num_predict": 6}}
    async with client.stream("POST", url + "/api/generate", json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            chunk = json.loads(line)
            assert "error" not in chunk, chunk
            if chunk["done"]:
                return chunk["eval_count"]
    raise AssertionError("stream ended without done")


def test_streams_across_three_models_survive_eviction(small_server):
    seen: list[set[str]] = []

    async def watch(stop: asyncio.Event):
        # /api/ps answers between engine steps and loads; on a loaded 2-core machine that can
        # take longer than httpx's 5 s default, which is not what this test is about.
        async with httpx.AsyncClient(timeout=120) as client:
            while not stop.is_set():
                models = (await client.get(small_server.url + "/api/ps")).json()["models"]
                seen.append({m["name"] for m in models})
                await asyncio.sleep(0.2)

    async def run():
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        async with httpx.AsyncClient(timeout=600) as client:
            counts = await asyncio.gather(*[
                _stream(client, small_server.url, MODELS[i % 3], i) for i in range(9)])
        stop.set()
        await watcher
        return counts

    counts = asyncio.run(run())
    assert counts == [6] * 9
    assert set().union(*seen) == set(MODELS)  # all three were resident at some point
    assert max(len(s) for s in seen) <= 2  # never more than fit
    devices = [d for m in loaded(small_server).values() for d in m["devices"]]
    assert len(devices) == len(set(devices))  # one model per device


def test_keep_alive_zero_and_stop_unload(small_server, monkeypatch):
    url = small_server.url
    httpx.post(url + "/api/generate", json={"model": "mario"}, timeout=300)
    assert "mario:latest" in loaded(small_server)
    httpx.post(url + "/api/generate", json={"model": "mario", "keep_alive": 0}, timeout=60)
    _wait(lambda: "mario:latest" not in loaded(small_server))
    httpx.post(url + "/api/generate", json={"model": "luigi"}, timeout=300)
    monkeypatch.setenv("OLLAMA_HOST", url)
    assert cli(["stop", "luigi"]) == 0
    _wait(lambda: "luigi:latest" not in loaded(small_server))


def test_two_second_keep_alive_expires(small_server):
    r = httpx.post(small_server.url + "/api/generate",
                   json={"model": "gemma3:270m", "keep_alive": "2s"}, timeout=300)
    assert r.json()["done_reason"] == "load"
    entry = loaded(small_server)["gemma3:270m"]
    assert entry["size_vram"] == 0 and entry["size"] > 500_000_000
    _wait(lambda: "gemma3:270m" not in loaded(small_server), timeout=15)


def test_resident_memory_returns_after_unload(small_server):
    pid = small_server.process.pid
    _wait(lambda: not loaded(small_server), timeout=30, unload_all=small_server)
    before = settled_rss(pid)
    httpx.post(small_server.url + "/api/generate", json={"model": "gemma3:270m"}, timeout=300)
    during = rss_bytes(pid)
    assert during - before > 400_000_000  # the weights are really in memory (~0.65 GB packed)
    httpx.post(small_server.url + "/api/generate",
               json={"model": "gemma3:270m", "keep_alive": 0}, timeout=60)
    _wait(lambda: not loaded(small_server))
    after = settled_rss(pid)
    assert after - before < 0.25 * (during - before), (before, during, after)


def _wait(predicate, timeout: float = 60, unload_all=None) -> None:
    if unload_all is not None:
        for name in loaded(unload_all):
            httpx.post(unload_all.url + "/api/generate", json={"model": name, "keep_alive": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")
