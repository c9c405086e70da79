"""Per-key limits through the middleware: 429 with Retry-After, then success once it passes."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from serve.auth.keys import KeyRing
from serve.auth.limits import RateLimiter
from serve.auth.middleware import AccessMiddleware


def app_with(tmp_path, route, **kw):
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n"
                    f"  - {{id: slow, role: infer, sha256: {hashlib.sha256(b'k-slow').hexdigest()}, "
                    "rate_limit: 30, burst: 1}\n")
    return Starlette(routes=[Route("/api/chat", route, methods=["POST"])], middleware=[
        Middleware(AccessMiddleware, keyring=KeyRing(["k-admin"], keys), **kw)])


async def ok(request):
    return PlainTextResponse("ok")


def test_rate_limit_429_then_success_after_retry_after(tmp_path):
    now = [0.0]
    app = app_with(tmp_path, ok, rates=RateLimiter(clock=lambda: now[0]), rate_limit=120)

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            slow = {"Authorization": "Bearer k-slow"}
            assert (await c.post("/api/chat", headers=slow)).status_code == 200
            denied = await c.post("/api/chat", headers=slow)
            assert denied.status_code == 429 and "error" in denied.json()
            wait = int(denied.headers["retry-after"])
            assert wait == 2  # 30 a minute: one every 2 s
            # the server default (120/min, bursts of 120) applies to the bare admin key
            admin = {"Authorization": "Bearer k-admin"}
            for _ in range(5):
                assert (await c.post("/api/chat", headers=admin)).status_code == 200
            now[0] += wait
            assert (await c.post("/api/chat", headers=slow)).status_code == 200

    asyncio.run(run())


def test_concurrency_limit_429_while_busy(tmp_path):
    release = asyncio.Event()
    started = asyncio.Event()

    async def busy(request):
        started.set()
        await release.wait()
        return PlainTextResponse("done")

    app = app_with(tmp_path, busy, concurrency=1)

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            admin = {"Authorization": "Bearer k-admin"}
            first = asyncio.create_task(c.post("/api/chat", headers=admin))
            await asyncio.wait_for(started.wait(), 60)
            second = await c.post("/api/chat", headers=admin)
            assert second.status_code == 429 and second.headers["retry-after"] == "1"
            release.set()
            assert (await asyncio.wait_for(first, 60)).status_code == 200
            assert (await c.post("/api/chat", headers=admin)).status_code == 200

    asyncio.run(run())
