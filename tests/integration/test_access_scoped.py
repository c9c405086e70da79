"""Scoped keys on a live TLS server with the real models: each role against each route family,
model patterns, a keys-file reload without restart, rate limits, the num_predict ceiling, the
path policy, the audit log, the `ollama`/`openai` clients and the CLI over TLS, and that no
secret reaches the server's log."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from registry.paths import PATH_REFUSED
from tests.certs import self_signed
from tests.integration.conftest import start_server, stop_server
from tests.tiny import tiny_gguf

pytestmark = pytest.mark.slow

KEYS = {  # id: (token, role, extra yaml)
    "admin-live": ("k-admin-live-1", "admin", ""),
    "reader": ("k-reader-2", "read", ""),
    "inferer": ("k-inferer-3", "infer", ""),
    "gemma-only": ("k-gemma-only-4", "infer", ", models: [gemma3]"),
    "throttled": ("k-throttled-5", "infer", ", rate_limit: 12, burst: 1"),
}
SMALL = {"num_predict": 2, "temperature": 0}
GEMMA = "gemma3:270m"


def keys_yaml(keys: dict) -> str:
    lines = [f"- {{id: {key_id}, role: {role}, "
             f"sha256: {hashlib.sha256(token.encode()).hexdigest()}{extra}}}"
             for key_id, (token, role, extra) in keys.items()]
    return "\n".join(lines) + "\n"


def replace_file(path: Path, text: str) -> None:
    """An atomic swap, as a Secret update is: a new inode under the same name."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def scoped(tmp_path_factory, corral_cache, tls):
    tmp = tmp_path_factory.mktemp("scoped")
    keys = tmp / "keys.yaml"
    keys.write_text(keys_yaml(KEYS))
    allowed, outside = tmp / "allowed", tmp / "outside"
    allowed.mkdir()
    outside.mkdir()
    tiny_gguf(allowed / "ok.gguf")
    tiny_gguf(outside / "secret.gguf")
    os.symlink(outside / "secret.gguf", allowed / "link.gguf")
    cert, key = tls
    server = start_server(tmp, {
        "CORRAL_CACHE": str(corral_cache), "CORRAL_GGUF_WEIGHTS": "float",
        "CORRAL_API_KEY": "k-bare-admin", "CORRAL_API_KEYS_FILE": str(keys),
        "CORRAL_TLS_CERT": str(cert), "CORRAL_TLS_KEY": str(key),
        "CORRAL_MAX_NUM_PREDICT": "4", "CORRAL_LOCAL_MODELS": str(allowed),
        "CORRAL_REGISTRY_AUTH": "127.0.0.1:1=user:regpass-secret-88"})
    server.keys_file = keys
    server.allowed, server.outside = allowed, outside
    yield server
    stop_server(server)


def client(server, tls, key_id=None, token=None):
    token = token or (KEYS[key_id][0] if key_id else None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return ollama.Client(host=server.url, verify=ssl.create_default_context(cafile=str(tls[0])),
                         headers=headers)


def status_of(call) -> int:
    try:
        call()
    except ollama.ResponseError as err:
        return err.status_code
    return 200


def test_each_role_on_each_route_family(scoped, tls):
    chat = {"model": GEMMA, "messages": [{"role": "user", "content": "hi"}], "options": SMALL}
    families = {
        "read": lambda c: c.list(),
        "show": lambda c: c.show(GEMMA),
        "ps": lambda c: c.ps(),
        "chat": lambda c: c.chat(**chat),
        "embed": lambda c: c.embed(model="all-minilm", input="hello"),
        # copy/delete all-minilm: deleting a copy unloads the weights it shares
        "copy": lambda c: c.copy("all-minilm", "scratch-copy"),
        "delete": lambda c: c.delete("scratch-copy"),
        "create": lambda c: c.create(model="scratch-made", from_=GEMMA, system="be brief"),
        "pull": lambda c: c.pull("no such name!"),  # past the access check: 400
    }
    allowed = {"reader": {"read", "show", "ps"},
               "inferer": {"read", "show", "ps", "chat", "embed"},
               "admin-live": set(families)}
    seen = {}
    for key_id, permitted in allowed.items():
        c = client(scoped, tls, key_id)
        for family, call in families.items():
            code = seen[(key_id, family)] = status_of(lambda: call(c))
            if family in permitted:
                assert code not in (401, 403), (key_id, family, code, scoped.log()[-3000:])
            else:
                assert code == 403, (key_id, family, code)
    for family, call in families.items():
        assert status_of(lambda: call(client(scoped, tls))) == 401, family
        assert status_of(lambda: call(client(scoped, tls, token="k-nobody"))) == 401, family
    verify = str(tls[0])
    assert httpx.get(scoped.url + "/", verify=verify).status_code == 200
    assert httpx.get(scoped.url + "/metrics", verify=verify).status_code == 401
    reader = {"Authorization": f"Bearer {KEYS['reader'][0]}"}
    assert httpx.get(scoped.url + "/metrics", verify=verify, headers=reader).status_code == 200
    log = scoped.log()
    assert "corral.audit: key=admin-live action=POST /api/copy model=all-minilm,scratch-copy result=200" in log
    assert "corral.audit: key=inferer action=POST /api/copy model=- result=403 denied" in log


def test_model_patterns_with_ollama_and_openai_clients(scoped, tls):
    c = client(scoped, tls, "gemma-only")
    assert [m.model for m in c.list().models] == [GEMMA]
    assert c.chat(model=GEMMA, messages=[{"role": "user", "content": "hi"}],
                  options=SMALL).message.role == "assistant"
    assert status_of(lambda: c.embed(model="all-minilm", input="x")) == 403
    with httpx.Client(verify=str(tls[0])) as http:
        oai = openai.OpenAI(base_url=scoped.url + "/v1", api_key=KEYS["gemma-only"][0],
                            http_client=http, max_retries=0)
        assert [m.id for m in oai.models.list()] == [GEMMA]
        reply = oai.chat.completions.create(model=GEMMA, max_tokens=2,
                                            messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.role == "assistant"
        with pytest.raises(openai.PermissionDeniedError):
            oai.embeddings.create(model="all-minilm", input="x")


def test_num_predict_ceiling(scoped, tls):
    reply = client(scoped, tls, "inferer").generate(
        model=GEMMA, prompt="Count from one to fifty:", options={"num_predict": 50, "temperature": 0})
    assert reply.eval_count <= 4, reply


def test_rate_limit_then_success_after_retry_after(scoped, tls):
    headers = {"Authorization": f"Bearer {KEYS['throttled'][0]}"}
    with httpx.Client(verify=str(tls[0]), headers=headers, timeout=60) as http:
        for _ in range(5):  # one a burst: a stalled machine may refill one between two calls
            r = http.get(scoped.url + "/api/tags")
            if r.status_code == 429:
                break
            assert r.status_code == 200, r.text
        else:
            pytest.fail("no 429 in 5 quick calls at 12 a minute")
        assert "error" in r.json()
        time.sleep(int(r.headers["retry-after"]))
        assert http.get(scoped.url + "/api/tags").status_code == 200


def test_server_paths_only_under_local_models(scoped, tls):
    """The old create form names server paths; a missing and an existing file outside
    CORRAL_LOCAL_MODELS, a symlink out of it and `..` all get the one 403."""
    headers = {"Authorization": f"Bearer {KEYS['admin-live'][0]}"}
    with httpx.Client(verify=str(tls[0]), headers=headers, timeout=120) as http:
        def create(path):
            return http.post(scoped.url + "/api/create", json={
                "model": "from-path", "stream": False, "modelfile": f"FROM {path}\n"})

        ok = create(scoped.allowed / "ok.gguf")
        assert ok.status_code == 200 and ok.json()["status"] == "success", ok.text
        for path in (scoped.outside / "secret.gguf", scoped.outside / "missing.gguf",
                     scoped.allowed / "link.gguf", f"{scoped.allowed}/../outside/secret.gguf",
                     f"{scoped.allowed}/../outside/missing.gguf", "/etc/passwd", "/no/such/file"):
            r = create(path)
            assert (r.status_code, r.json()) == (403, {"error": PATH_REFUSED}), (path, r.text)


def test_cli_and_env_key_over_tls(scoped, tls, monkeypatch):
    env = {**os.environ, "OLLAMA_HOST": scoped.url, "SSL_CERT_FILE": str(tls[0]),
           "OLLAMA_API_KEY": KEYS["inferer"][0]}
    run = lambda e: subprocess.run([sys.executable, "-m", "serve.cli", "list"], env=e,  # noqa: E731
                                   capture_output=True, text=True, timeout=120,
                                   cwd=Path(__file__).parents[2])
    ok = run(env)
    assert ok.returncode == 0 and GEMMA in ok.stdout, ok.stdout + ok.stderr
    bad = run({**env, "OLLAMA_API_KEY": "k-wrong"})
    assert bad.returncode != 0 and "unauthorized" in bad.stderr, bad.stdout + bad.stderr
    monkeypatch.setenv("OLLAMA_API_KEY", KEYS["reader"][0])  # the ollama client's own variable
    plain = ollama.Client(host=scoped.url, verify=ssl.create_default_context(cafile=str(tls[0])))
    assert any(m.model == GEMMA for m in plain.list().models)


def test_keys_file_reload_without_restart(scoped, tls):
    """Runs last in this module: it rewrites the keys the others use, and restores them."""
    changed = {k: v for k, v in KEYS.items() if k != "reader"}
    changed["late"] = ("k-late-6", "read", "")
    try:
        replace_file(scoped.keys_file, keys_yaml(changed))
        assert status_of(lambda: client(scoped, tls, token="k-late-6").list()) == 200
        assert status_of(lambda: client(scoped, tls, "reader").list()) == 401
        replace_file(scoped.keys_file, "keys: [{role: nonsense}]\n")  # a bad edit: keys kept
        assert status_of(lambda: client(scoped, tls, token="k-late-6").list()) == 200
        assert "not reloaded, keeping the previous keys" in scoped.log()
    finally:
        replace_file(scoped.keys_file, keys_yaml(KEYS))
    assert status_of(lambda: client(scoped, tls, "reader").list()) == 200


def test_no_secret_in_the_log(scoped, tls):
    """Keys, bearer tokens and registry credentials are masked on every logger; the access log
    writes paths with their query, where some clients put credentials."""
    with httpx.Client(verify=str(tls[0]), timeout=120) as http:
        auth = {"Authorization": f"Bearer {KEYS['admin-live'][0]}"}
        assert http.get(scoped.url + "/api/tags?api_key=k-bare-admin&token=tok-in-url-42",
                        headers=auth).status_code == 200
        http.post(scoped.url + "/api/pull", headers=auth, json={
            "model": "no such name!", "username": "u", "password": "bodypass-secret-99"})
        http.get(scoped.url + "/api/tags", headers={"Authorization": "Bearer k-guess-1234"})
    log = scoped.log()
    assert "GET /api/tags?api_key=[REDACTED]&token=[REDACTED]" in log, log[-3000:]
    secrets = [*(token for token, _, _ in KEYS.values()), "k-bare-admin", "regpass-secret-88",
               "bodypass-secret-99", "k-guess-1234", "tok-in-url-42"]
    for secret in secrets:
        assert secret not in log, (secret, log[-3000:])
