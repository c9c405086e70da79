"""Bearer keys, CORS and Host rules on a live server, through the real `ollama` client."""

from __future__ import annotations

import httpx
import ollama
import pytest

from tests.integration.conftest import start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("guarded"), {
        "CORRAL_API_KEY": "k-one,k-two", "CORRAL_NO_DEFAULT_MODELS": "1",
        "OLLAMA_ORIGINS": "https://chat.example.com"})
    yield server
    stop_server(server)


def test_missing_or_wrong_key_is_401(guarded_server, monkeypatch):
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=guarded_server.url).list()
    assert err.value.status_code == 401 and err.value.error == "unauthorized"
    monkeypatch.setenv("OLLAMA_API_KEY", "wrong")
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=guarded_server.url).list()
    # the root stays open for health checks
    assert httpx.get(guarded_server.url + "/").status_code == 200


def test_ollama_client_sends_its_key(guarded_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "k-two")
    assert ollama.Client(host=guarded_server.url).list().models == []


def test_foreign_origin_and_host(guarded_server):
    auth = {"Authorization": "Bearer k-one"}
    r = httpx.get(guarded_server.url + "/api/tags", headers={**auth, "Origin": "https://evil.test"})
    assert r.status_code == 403
    r = httpx.get(guarded_server.url + "/api/tags",
                  headers={**auth, "Origin": "https://chat.example.com"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
    r = httpx.get(guarded_server.url + "/api/tags", headers={**auth, "Host": "attacker.example"})
    assert r.status_code == 403
