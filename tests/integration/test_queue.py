"""A full queue answers 503 with Ollama's text while the admitted requests complete."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.conftest import start_server, stop_server

pytestmark = pytest.mark.slow

BUSY = "server busy, please try again.  maximum pending requests exceeded"


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory, corral_cache):
    server = start_server(tmp_path_factory.mktemp("queue"), {
        "OLLAMA_MAX_QUEUE": "2", "OLLAMA_NUM_PARALLEL": "1", "CORRAL_CACHE": str(corral_cache)})
    yield server
    stop_server(server)


def test_full_queue_is_503(queue_server):
    url = queue_server.url
    assert httpx.post(url + "/api/generate", json={"model": "gemma3:270m"},
                      timeout=300).json()["done_reason"] == "load"

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, dict]:
        r = await client.post(url + "/api/generate", json={
            "model": "gemma3:270m", "prompt": f"Request {i}", "stream": False,
            "options": {"temperature": 0, "num_predict": 8}})
        return r.status_code, r.json()

    async def run():
        async with httpx.AsyncClient(timeout=300) as client:
            return await asyncio.gather(*[one(client, i) for i in range(8)])

    results = asyncio.run(run())
    busy = [body for status, body in results if status == 503]
    done = [body for status, body in results if status == 200]
    assert busy and all(body == {"error": BUSY} for body in busy)
    assert done and all(body["done"] and body["eval_count"] == 8 for body in done)
    assert len(busy) + len(done) == 8
