"""The disk filling up during the GGUF conversion: the conversion cache is a 64 MiB tmpfs and
gemma3:270m's packed entry takes about 0.5 GiB there (its float one about 1 GiB).

The load fails with 507 "no space left on device", no half-written cache entry is left to be
taken for a good one, and the server keeps serving: the embedding model (which needs no
conversion) answers, and gemma3:270m answers as soon as the cache has room again."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.faults.disk import small_disk
from tests.integration.conftest import start_server, stop_server

pytestmark = pytest.mark.slow
DISK_MIB = 64


def cache_files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def test_conversion_that_fills_the_disk_fails_clearly_and_leaves_no_entry(tmp_path):
    with small_disk(tmp_path / "cache", DISK_MIB) as cache:
        server = start_server(tmp_path / "server", {"CORRAL_CACHE": str(cache)})
        try:
            reply = httpx.post(server.url + "/api/generate", timeout=600, json={
                "model": "gemma3:270m", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
            assert reply.status_code == 507, (reply.status_code, reply.text, server.log()[-3000:])
            assert reply.json() == {"error": "no space left on device"}
            left = cache_files(cache)
            # The packed entry (the default on CPU) or the float one, whichever the load wrote.
            written = [f for f in left if f.startswith(("converted", "packed"))]
            assert written == [], f"half-written conversion left behind: {written}"

            embed = httpx.post(server.url + "/api/embed", timeout=600,
                               json={"model": "all-minilm", "input": "still serving"})
            assert embed.status_code == 200, (embed.text, server.log()[-3000:])
            assert len(embed.json()["embeddings"][0]) == 384
            assert httpx.get(server.url + "/health", timeout=30).status_code == 200
        finally:
            stop_server(server)
