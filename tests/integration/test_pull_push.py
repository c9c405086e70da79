"""Pull and push through the live server with the `ollama` client, against Debian's real OCI
registry (`docker-registry`) on loopback: push the embedded gemma3:270m and a model created from
it, pull both into a second server with an empty store, check every blob and the manifest bytes,
then generate with the pulled model. Also htpasswd basic auth, with and without credentials.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest

from registry.manifest import Manifest
from registry.names import ModelName
from registry.store import Store
from tests.integration.conftest import start_server, stop_server
from tests.registry.test_oci_helpers import start_registry

pytestmark = pytest.mark.slow

USER, PASSWORD = "alice", "s3cret"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("pp-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("pp-auth-registry"), users={USER: PASSWORD})
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, live_server, auth_registry):
    """A second server with an empty store and credentials for the htpasswd registry."""
    server = start_server(tmp_path_factory.mktemp("pp-fresh"), {
        "CORRAL_NO_DEFAULT_MODELS": "1",
        "CORRAL_CACHE": str(live_server.cache_dir),  # reuse the converted gemma weights
        "CORRAL_REGISTRY_AUTH": f"{auth_registry.host}={USER}:{PASSWORD}",
    })
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def published(live_server, registry):
    """gemma3:270m and a model created from it, pushed from the live server and then deleted
    there; returns their names and the push progress."""
    client = ollama.Client(host=live_server.url)
    gem = f"{registry.host}/library/gemma3:270m"
    made = f"{registry.host}/library/pp-made:latest"
    client.copy("gemma3:270m", gem)
    client.create(model=made, from_="gemma3:270m", system="You answer in one word.")
    try:
        streamed = [r.model_dump(exclude_none=True)
                    for r in client.push(gem, insecure=True, stream=True)]
        final = client.push(made, insecure=True, stream=False)
        local = {n: Store(live_server.models_dir).read_manifest_bytes(ModelName.parse(n))
                 for n in (gem, made)}
    finally:
        client.delete(gem)
        client.delete(made)
    return {"gem": gem, "made": made, "streamed": streamed, "final": final, "local": local}


def registry_manifest(registry, name: str) -> bytes:
    n = ModelName.parse(name)
    resp = httpx.get(f"{registry.url}/v2/{n.namespace}/{n.model}/manifests/{n.tag}",
                     headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    resp.raise_for_status()
    return resp.content


def statuses(events: list[dict]) -> list[str]:
    out: list[str] = []
    for e in events:
        s = e["status"].split(" ")[0] if e.get("digest") else e["status"]
        if not out or out[-1] != s:
            out.append(s)
    return out


def test_push_progress_and_registry_bytes(published, registry):
    assert statuses(published["streamed"]) == [
        "retrieving manifest", "pushing", "pushing manifest", "success"]
    manifest = Manifest.from_bytes(published["local"][published["gem"]])
    for layer in manifest.all_layers():
        mine = [e for e in published["streamed"] if e.get("digest") == layer.digest]
        assert mine[0]["status"] == f"pushing {layer.digest[7:19]}"
        assert mine[-1]["completed"] == mine[-1]["total"] == layer.size
    assert published["final"].status == "success"
    for name in (published["gem"], published["made"]):
        assert registry_manifest(registry, name) == published["local"][name]


def test_pull_back_into_an_empty_store_and_generate(published, registry, fresh):
    client = ollama.Client(host=fresh.url)
    events = [r.model_dump(exclude_none=True)
              for r in client.pull(published["gem"], insecure=True, stream=True)]
    assert statuses(events) == ["pulling manifest", "pulling", "verifying sha256 digest",
                                "writing manifest", "success"]
    final = client.pull(published["made"], insecure=True, stream=False)
    assert final.status == "success"

    store = Store(fresh.models_dir)
    for name in (published["gem"], published["made"]):
        raw = store.read_manifest_bytes(ModelName.parse(name))
        assert raw == registry_manifest(registry, name) == published["local"][name]
        for layer in Manifest.from_bytes(raw).all_layers():
            data = store.read_blob(layer.digest)
            assert len(data) == layer.size
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
    assert not [p for p in store.blobs_dir.iterdir() if "partial" in p.name]

    listed = {m.model for m in client.list().models}
    assert {published["gem"], published["made"]} <= listed
    out = client.generate(model=published["made"], prompt="Say hi.",
                          options={"num_predict": 3, "temperature": 0})
    assert out.done and 0 < out.eval_count <= 3


def test_cli_pull_against_the_server(published, fresh):
    env = {**os.environ, "OLLAMA_HOST": fresh.url.removeprefix("http://")}
    proc = subprocess.run([sys.executable, "-m", "serve.cli", "pull", "--insecure",
                           published["made"]], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    assert "success" in proc.stdout + proc.stderr


def test_pull_and_push_errors(published, registry, fresh):
    client = ollama.Client(host=fresh.url)
    missing = f"{registry.host}/library/pp-made:nope"
    with pytest.raises(ollama.ResponseError) as err:
        list(client.pull(missing, insecure=True, stream=True))
    assert err.value.error == "pull model manifest: file does not exist"
    with pytest.raises(ollama.ResponseError) as err:
        client.pull(missing, insecure=True)
    # a missing model and http without `insecure` are the client's errors, before the stream
    assert (err.value.status_code, err.value.error) == (
        404, "pull model manifest: file does not exist")
    with pytest.raises(ollama.ResponseError) as err:
        client.pull(f"http://{registry.host}/library/pp-made:latest")
    assert (err.value.status_code, err.value.error) == (400, "insecure protocol http")
    for path, body in (("pull", {"model": missing, "insecure": True}),
                       ("push", {"model": f"{registry.host}/library/never-made:x",
                                 "insecure": True}),
                       ("push", {"model": f"http://{registry.host}/library/pp-made:latest"})):
        r = httpx.post(f"{fresh.url}/api/{path}", json=body)
        assert r.status_code in (400, 404) and "x-ndjson" not in r.headers["content-type"], r.text

    for body, status, text in (
        ({"model": ""}, 400, "invalid model name"),
        ({"model": "bad name!"}, 400, "invalid model name"),
    ):
        r = httpx.post(f"{fresh.url}/api/pull", json=body)
        assert (r.status_code, r.json()) == (status, {"error": text})
    r = httpx.post(f"{fresh.url}/api/push", json={"model": ""})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = httpx.post(f"{fresh.url}/api/pull", content=b"")
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})
    # the deprecated `name` alias
    r = httpx.post(f"{fresh.url}/api/pull", timeout=300,
                   json={"name": published["made"], "insecure": True, "stream": False})
    assert (r.status_code, r.json()) == (200, {"status": "success"})


def test_create_pulls_a_missing_from_model(registry, fresh):
    client = ollama.Client(host=fresh.url)
    with pytest.raises(ollama.ResponseError) as err:
        list(client.create(model="pp-derived", from_=f"{registry.host}/library/absent:v9",
                           stream=True))
    # create went to the registry for the manifest, with default (https) options as Ollama does;
    # the loopback registry speaks http only, so the failure is the TLS handshake's
    assert err.value.error.startswith("pull model manifest: "), err.value.error


def test_basic_auth_registry(published, auth_registry, fresh, live_server):
    client = ollama.Client(host=fresh.url)
    client.pull(published["made"], insecure=True)
    private = f"{auth_registry.host}/library/private:latest"
    client.copy(published["made"], private)
    assert client.push(private, insecure=True).status == "success"
    client.delete(private)
    assert client.pull(private, insecure=True).status == "success"
    assert private in {m.model for m in client.list().models}

    anonymous = ollama.Client(host=live_server.url)  # no credentials for that registry
    with pytest.raises(ollama.ResponseError) as err:
        anonymous.pull(private, insecure=True)
    assert err.value.error == "pull model manifest: unauthorized: access denied"
    anonymous.copy("gemma3:270m", private)
    try:
        with pytest.raises(ollama.ResponseError) as err:
            list(anonymous.push(private, insecure=True, stream=True))
        assert err.value.error == "unauthorized: access denied"
    finally:
        anonymous.delete(private)
