"""The access rules on the whole app, in-process (no model runtime): roles per route, model
patterns, server-side paths in create, body limits on every route, the audit log."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest
from starlette.testclient import TestClient

from registry.paths import PATH_REFUSED
from registry.store import Store
from serve.app import build_app
from serve.auth.roles import ROUTE_ROLES, Role
from serve.services import Services
from serve.settings import Settings
from tests.tiny import tiny_gguf

TOKENS = {"read": "k-read-0001", "infer": "k-infer-0002", "admin": "k-admin-0003",
          "team": "k-team-0004", "team-admin": "k-teamadmin-0005"}
MISSING = {"model": "no-such-model"}

# One request per route, with a body that passes the access check and fails (or not) later:
# allowed means anything but 401/403.
CALLS = {
    "/api/version": ("GET", "/api/version", None),
    "/api/tags": ("GET", "/api/tags", None),
    "/api/ps": ("GET", "/api/ps", None),
    "/api/show": ("POST", "/api/show", MISSING),
    "/metrics": ("GET", "/metrics", None),
    "/v1/models": ("GET", "/v1/models", None),
    "/v1/models/{model:path}": ("GET", "/v1/models/no-such-model", None),
    "/api/generate": ("POST", "/api/generate", MISSING),
    "/api/chat": ("POST", "/api/chat", MISSING),
    "/api/embed": ("POST", "/api/embed", MISSING),
    "/api/embeddings": ("POST", "/api/embeddings", MISSING),
    "/v1/chat/completions": ("POST", "/v1/chat/completions",
                             {**MISSING, "messages": [{"role": "user", "content": "hi"}]}),
    "/v1/completions": ("POST", "/v1/completions", {**MISSING, "prompt": "hi"}),
    "/v1/embeddings": ("POST", "/v1/embeddings", {**MISSING, "input": "hi"}),
    "/v1/messages": ("POST", "/v1/messages", {**MISSING, "max_tokens": 5,
                                              "messages": [{"role": "user", "content": "hi"}]}),
    "/api/create": ("POST", "/api/create", {"model": "made"}),
    "/api/copy": ("POST", "/api/copy", {"source": "no-such-model", "destination": "x"}),
    "/api/delete": ("DELETE", "/api/delete", MISSING),
    "/api/pull": ("POST", "/api/pull", {"model": ""}),
    "/api/push": ("POST", "/api/push", {"model": ""}),
    "/api/blobs/{digest}": ("HEAD", "/api/blobs/sha256:" + "0" * 64, None),
}


def keys_file(path):
    lines = ["keys:"]
    roles = {"read": "read", "infer": "infer", "admin": "admin", "team": "infer",
             "team-admin": "admin"}
    for name, token in TOKENS.items():
        lines += [f"  - id: {name}", f"    sha256: {hashlib.sha256(token.encode()).hexdigest()}",
                  f"    role: {roles[name]}"]
        if name.startswith("team"):
            lines.append('    models: ["team-a/*"]')
    path.write_text("\n".join(lines) + "\n")
    return path


def make_client(tmp_path, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = Store(tmp_path / "models")
    settings = Settings(models_dir=store.root, cache_dir=tmp_path / "cache", default_models=False,
                        api_keys_file=keys_file(tmp_path / "keys.yaml"), **overrides)
    app = build_app(settings, Services(settings=settings, store=store))
    return TestClient(app, base_url="http://127.0.0.1:11434")


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


def call(client, route, token=None, **kw):
    method, url, body = CALLS[route]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, url, json=body, headers=headers, **kw)


def as_(role):
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def seed(client, tmp_path, *names):
    data = tiny_gguf(tmp_path / "seed.gguf").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.post(f"/api/blobs/{digest}", content=data, headers=as_("admin")).status_code in (200, 201)
    for name in names:
        r = client.post("/api/create", json={"model": name, "files": {"m.gguf": digest},
                                             "stream": False}, headers=as_("admin"))
        assert r.status_code == 200, r.text


def test_every_role_on_every_route(client):
    assert set(CALLS) == {p for p, r in ROUTE_ROLES.items() if r is not None} - {
        "/api/openapi.json", "/v1/responses", "/api/debug/faults"}  # mounted by other issues
    outcome = {}
    for route, needed in ROUTE_ROLES.items():
        if route not in CALLS:
            continue
        for role in ("read", "infer", "admin"):
            r = call(client, route, TOKENS[role])
            allowed = Role.parse(role) >= needed
            outcome[(route, role)] = r.status_code
            if allowed:
                assert r.status_code not in (401, 403), (route, role, r.status_code, r.text)
            else:
                assert r.status_code == 403, (route, role, r.status_code, r.text)
                assert CALLS[route][0] == "HEAD" or "error" in r.json()
    for route in CALLS:  # no key or an unknown one: 401 everywhere
        assert call(client, route).status_code == 401, route
        r = call(client, route, "k-unknown")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", route


def test_probes_need_no_key_and_metrics_can_be_opened(tmp_path, client):
    assert client.get("/").status_code == 200 and client.head("/").status_code == 200
    for path in ("/health", "/ready"):  # issue 9's routes: whatever they answer, never 401
        assert client.get(path).status_code != 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=as_("read")).status_code == 200
    with make_client(tmp_path / "open", metrics_open=True) as open_metrics:
        assert open_metrics.get("/metrics").status_code == 200
        assert open_metrics.get("/api/tags").status_code == 401


def test_unknown_paths_need_a_key_too(client):
    assert client.get("/api/nope").status_code == 401
    assert client.get("/api/nope", headers=as_("read")).status_code == 404


def test_model_patterns_filter_listings_and_guard_bodies(client, tmp_path):
    seed(client, tmp_path, "team-a/chat", "other")
    names = lambda r: sorted(m["name"] for m in r.json()["models"])  # noqa: E731
    assert names(client.get("/api/tags", headers=as_("infer"))) == ["other:latest",
                                                                    "team-a/chat:latest"]
    assert names(client.get("/api/tags", headers=as_("team"))) == ["team-a/chat:latest"]
    v1 = client.get("/v1/models", headers=as_("team")).json()
    assert [m["id"] for m in v1["data"]] == ["team-a/chat:latest"]
    assert client.get("/v1/models/other", headers=as_("team")).status_code == 403
    assert client.get("/v1/models/team-a/chat", headers=as_("team")).status_code == 200
    assert client.post("/api/show", json={"model": "team-a/chat"}, headers=as_("team")).status_code == 200
    for route, body in (("/api/show", {"model": "other"}), ("/api/show", {"name": "other"}),
                        ("/api/generate", {"model": "other", "prompt": "x"}),
                        ("/api/chat", {"model": "team-a/chat", "name": "other"}),
                        ("/api/embed", {"model": "other", "input": "x"}),
                        ("/v1/chat/completions", {"model": "other", "messages": []}),
                        ("/v1/messages", {"model": "other", "max_tokens": 1, "messages": []})):
        r = client.post(route, json=body, headers=as_("team"))
        assert r.status_code == 403 and r.json() == {"error": 'this key may not use model "other"'}, (route, r.text)


def test_admin_patterns_cover_copy_create_and_delete(client, tmp_path):
    seed(client, tmp_path, "team-a/chat", "other")
    h = as_("team-admin")
    for body in ({"source": "other", "destination": "team-a/x"},
                 {"source": "team-a/chat", "destination": "other2"}):
        assert client.post("/api/copy", json=body, headers=h).status_code == 403, body
    assert client.post("/api/copy", json={"source": "team-a/chat", "destination": "team-a/x"},
                       headers=h).status_code == 200
    for body in ({"model": "team-a/new", "from": "other"},
                 {"model": "team-a/new", "modelfile": "FROM other\n"},  # checked once parsed
                 {"model": "elsewhere", "from": "team-a/chat"}):
        r = client.post("/api/create", json={**body, "stream": False}, headers=h)
        assert r.status_code == 403, (body, r.text)
    r = client.post("/api/create", json={"model": "team-a/new", "from": "team-a/chat",
                                         "stream": False}, headers=h)
    assert r.status_code == 200, r.text
    assert client.request("DELETE", "/api/delete", json={"model": "other"}, headers=h).status_code == 403
    assert client.request("DELETE", "/api/delete", json={"model": "team-a/x"}, headers=h).status_code == 200


def test_audit_line_per_state_changing_call(client, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="corral.audit"):
        seed(client, tmp_path, "team-a/chat")
        client.post("/api/copy", json={"source": "team-a/chat", "destination": "team-a/c"},
                    headers=as_("team-admin"))
        client.post("/api/copy", json={"source": "team-a/chat", "destination": "b"},
                    headers=as_("team-admin"))
        client.request("DELETE", "/api/delete", json={"model": "team-a/c"}, headers=as_("infer"))
        client.post("/api/chat", json=MISSING, headers=as_("infer"))  # not state-changing
    lines = [r.getMessage() for r in caplog.records if r.name == "corral.audit"]
    assert "key=admin action=POST /api/create model=team-a/chat result=200" in lines, lines
    assert ("key=team-admin action=POST /api/copy model=team-a/chat,team-a/c result=200"
            in lines), lines
    assert "key=team-admin action=POST /api/copy model=team-a/chat,b result=403 denied" in lines
    assert "key=infer action=DELETE /api/delete model=- result=403 denied" in lines
    assert any(line.startswith("key=admin action=POST /api/blobs/sha256:") for line in lines)
    assert not any("/api/chat" in line for line in lines)


# --- server-side paths in create --------------------------------------------------------------

def create(client, modelfile=None, **body):
    if modelfile is not None:
        body["modelfile"] = modelfile
    return client.post("/api/create", json={"model": "made", "stream": False, **body},
                       headers=as_("admin"))


def test_keyed_server_reads_no_server_paths_by_default(client, tmp_path):
    real = tiny_gguf(tmp_path / "real.gguf")
    replies = [create(client, f"FROM {real}\n"), create(client, "FROM /no/such/file.gguf\n"),
               create(client, "FROM /etc/passwd\n"), create(client, "FROM ../../etc\n"),
               create(client, f"FROM gemma3\nADAPTER {real}\n"),
               create(client, "FROM gemma3\nADAPTER /no/such/adapter\n"),
               create(client, path=str(tmp_path / "Modelfile")),
               create(client, path="/no/such/Modelfile")]
    for r in replies:
        assert (r.status_code, r.json()) == (403, {"error": PATH_REFUSED}), r.text


@pytest.fixture
def tree(tmp_path):
    """allowed/ holds a model, a symlink out, and a directory symlinked out; outside/ is not."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    tiny_gguf(allowed / "ok.gguf")
    tiny_gguf(outside / "secret.gguf")
    os.symlink(outside / "secret.gguf", allowed / "link.gguf")
    os.symlink(outside, allowed / "linkdir")
    return allowed, outside


def test_paths_under_local_models_only(tmp_path, tree):
    allowed, outside = tree
    with make_client(tmp_path / "srv", local_models=(allowed,)) as c:
        r = create(c, f"FROM {allowed / 'ok.gguf'}\n")
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        refused = [f"FROM {outside / 'secret.gguf'}\n",             # absolute, outside
                   f"FROM {allowed}/../outside/secret.gguf\n",      # .. out of the root
                   f"FROM {allowed / 'link.gguf'}\n",               # a symlink out
                   f"FROM {allowed / 'linkdir' / 'secret.gguf'}\n",  # through a linked dir
                   f"FROM {outside / 'missing.gguf'}\n",            # missing: the same answer
                   f"FROM {allowed}/../outside/missing.gguf\n"]
        for modelfile in refused:
            r = create(c, modelfile)
            assert (r.status_code, r.json()) == (403, {"error": PATH_REFUSED}), (modelfile, r.text)
        # relative paths resolve against the Modelfile's directory, and must stay inside too
        (allowed / "Modelfile").write_text("FROM ./ok.gguf\n")
        assert create(c, path=str(allowed / "Modelfile")).status_code == 200
        (allowed / "Escape").write_text("FROM ../outside/secret.gguf\n")
        assert create(c, path=str(allowed / "Escape")).status_code == 403


def test_open_local_server_reads_home_as_ollama_does(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    tiny_gguf(home / "m.gguf")
    settings = Settings.from_env({"HOME": str(home), "OLLAMA_MODELS": str(tmp_path / "models")})
    assert settings.local_models == (home,)
    keyed = Settings.from_env({"HOME": str(home), "CORRAL_API_KEY": "k"})
    assert keyed.local_models == ()
    listed = Settings.from_env({"HOME": str(home), "CORRAL_API_KEY": "k",
                                "CORRAL_LOCAL_MODELS": f"{tmp_path}/a,{tmp_path}/b"})
    assert listed.local_models == (tmp_path / "a", tmp_path / "b")


# --- body limits on every route ---------------------------------------------------------------

def test_body_limit_on_every_route(tmp_path):
    big = b'{"model": "' + b"x" * 5000 + b'"}'
    with make_client(tmp_path, max_json_bytes=1000, max_body_bytes=2000) as c:
        for route, (method, url, _) in CALLS.items():
            if method in ("GET", "HEAD"):
                continue
            r = c.request(method, url, content=big, headers=as_("admin"))
            assert r.status_code == 413 and r.json() == {"error": "request body too large"}, route
            chunked = c.request(method, url, content=iter([big[:600], big[600:]]),
                                headers=as_("admin"))
            assert chunked.status_code == 413, (route, chunked.text)
        blob = "/api/blobs/sha256:" + "0" * 64
        assert c.post(blob, content=b"x" * 3000, headers=as_("admin")).status_code == 413


def test_option_ceilings_cut_num_ctx_and_num_predict():
    from serve.options import resolve_options

    opts = resolve_options({}, {"num_ctx": 100000, "num_predict": -1}, 4096,
                           max_num_ctx=8192, max_num_predict=256)
    assert (opts.runner.num_ctx, opts.sampling.num_predict) == (8192, 256)
    opts = resolve_options({"num_ctx": 2048}, {"num_predict": 10}, 4096,
                           max_num_ctx=8192, max_num_predict=256)
    assert (opts.runner.num_ctx, opts.sampling.num_predict) == (2048, 10)
    assert resolve_options({}, {}, 16384, max_num_ctx=8192).runner.num_ctx == 8192
    assert resolve_options({}, {}, 4096).sampling.num_predict == -1  # no ceiling: as before


def test_cors_preflight_needs_no_key(client):
    """Browsers preflight without credentials; the key comes on the real request."""
    pre = client.options("/api/chat", headers={"Origin": "http://localhost:3000",
                                               "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and "Authorization" in pre.headers["access-control-allow-headers"]
    r = client.get("/api/tags", headers={"Origin": "http://localhost:3000", **as_("read")})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert client.get("/api/tags", headers={"Origin": "http://localhost:3000"}).status_code == 401
