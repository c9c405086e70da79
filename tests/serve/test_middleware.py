import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serve.middleware import (APIKeyMiddleware, BodyLimitMiddleware, CORSMiddleware,
                              HostMiddleware, host_allowed)


async def echo(request):
    body = await request.body()
    return PlainTextResponse(f"{len(body)}")


def client(**kw):
    app = Starlette(
        routes=[Route("/", echo, methods=["GET", "HEAD"]), Route("/api/x", echo, methods=["POST"]),
                Route("/api/blobs/d", echo, methods=["POST"])],
        middleware=[
            Middleware(CORSMiddleware, extra_origins=kw.get("origins", ())),
            Middleware(HostMiddleware, bind_host=kw.get("bind", "127.0.0.1")),
            Middleware(APIKeyMiddleware, keys=kw.get("keys", ())),
            Middleware(BodyLimitMiddleware, json_limit=kw.get("json_limit", 100), blob_limit=1000),
        ])
    return TestClient(app, base_url="http://127.0.0.1:11434")


def test_bearer_keys_guard_everything_but_root():
    c = client(keys=["k1", "k2"])
    assert c.get("/").status_code == 200
    r = c.post("/api/x", content=b"{}")
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
    assert c.post("/api/x", content=b"{}", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.post("/api/x", content=b"{}", headers={"Authorization": "Bearer k2"}).status_code == 200
    assert c.post("/api/x", content=b"{}", headers={"Authorization": "k1"}).status_code == 401
    assert c.post("/api/x", content=b"{}", headers={"x-api-key": "k1"}).status_code == 200
    assert c.post("/api/x", content=b"{}", headers={"x-api-key": "k3"}).status_code == 401


def test_no_keys_means_open():
    assert client().post("/api/x", content=b"{}").status_code == 200


def test_foreign_origin_is_forbidden_and_local_ones_get_cors_headers():
    c = client(origins=["https://app.example.com", "https://*.corp.test"])
    assert c.get("/", headers={"Origin": "https://evil.example"}).status_code == 403
    for origin in ("http://localhost:3000", "https://app.example.com", "https://x.corp.test",
                   "vscode-webview://abc", "chrome-extension://id"):
        r = c.get("/", headers={"Origin": origin})
        assert r.status_code == 200, origin
        assert r.headers["access-control-allow-origin"] == origin
    pre = c.options("/api/x", headers={"Origin": "http://localhost",
                                        "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert "Authorization" in pre.headers["access-control-allow-headers"]


def test_foreign_host_is_forbidden_on_loopback_bind():
    c = client()
    assert c.get("/", headers={"Host": "evil.example.com"}).status_code == 403
    assert c.get("/", headers={"Host": "localhost:11434"}).status_code == 200
    assert c.get("/", headers={"Host": "10.1.2.3"}).status_code == 200
    # bound to a public address, any Host is accepted
    assert client(bind="0.0.0.0").get("/", headers={"Host": "evil.example.com"}).status_code == 200


@pytest.mark.parametrize("host,ok", [
    ("localhost", True), ("127.0.0.1:11434", True), ("[::1]:80", True), ("192.168.1.2", True),
    ("myhost.local", True), ("svc.internal", True), ("example.com", False), ("8.8.8.8", False),
])
def test_host_rules(host, ok):
    assert host_allowed(host) is ok


def test_body_limits():
    c = client()
    r = c.post("/api/x", content=b"x" * 101)
    assert r.status_code == 413 and r.json() == {"error": "request body too large"}
    assert c.post("/api/x", content=b"x" * 100).status_code == 200
    assert c.post("/api/blobs/d", content=b"x" * 900).status_code == 200

    def chunks():
        yield b"x" * 60
        yield b"x" * 60
    assert c.post("/api/x", content=chunks()).status_code == 413
