"""SIGKILL during a pull, a create and a push, then a restart: the store is consistent.

Pull: the blob comes through FaultProxy slowed to about 1 MiB/s, the server is killed once half
of it has passed. After the restart the model is not listed and has no manifest, the partial is
kept (fresh) and the second pull resumes it: the proxy sends fewer bytes than the blob's size and
the blob's digest is right. An abandoned partial of another digest, aged past the prune age, is
deleted at that start.

Create: the Modelfile's FROM file is a FIFO the test feeds by hand, so the kill lands while the
server copies it into blobs/. After the restart nothing is listed, no manifest or temp file
stays (the temp file, aged, is pruned), and a create to the same name works.

Push: FaultProxy holds the first blob-upload PATCH, the server is killed while it waits. The
registry then has neither the manifest nor the blob, the local model is untouched, and the push
run again after the restart completes with the local manifest's bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from registry.names import ModelName
from registry.oci.download import partial_path
from registry.store import Store
from tests.integration.conftest import start_server, stop_server
from tests.registry.test_oci_helpers import FaultProxy, start_registry
from tests.registry.test_oci_transfer import make_model, push

pytestmark = pytest.mark.slow
MIB = 1 << 20
BLOB = 8 * MIB
OLD = time.time() - 2 * 3600  # past registry.store.PRUNE_AGE_S


def kill(server) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)


def wait_for(cond, timeout_s: float, what: str, server) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline or server.process.poll() is not None:
            pytest.fail(f"{what} never happened\n{server.log()[-3000:]}")
        time.sleep(0.05)


def tag_names(server) -> list[str]:
    return [m["name"] for m in httpx.get(server.url + "/api/tags", timeout=60).json()["models"]]


def age(paths) -> None:
    for p in paths:
        os.utime(p, (OLD, OLD))


def test_sigkill_mid_pull_then_restart_resumes(tmp_path):
    reg = start_registry(tmp_path / "registry")
    proxy = FaultProxy(reg.url)
    src = Store(tmp_path / "src")
    manifest = make_model(src, f"{reg.host}/library/killed:v1", size=BLOB)
    push(src, f"{reg.host}/library/killed:v1")
    name = f"{proxy.host}/library/killed:v1"
    digest = manifest.layers[0].digest
    env = {"CORRAL_NO_DEFAULT_MODELS": "1", "CORRAL_INSECURE_REGISTRIES": proxy.host}
    faults = proxy.reset(delay_s=0.06)  # per 64 KiB: ~1 MiB/s
    server = start_server(tmp_path / "server", env)
    store = Store(server.models_dir)

    def pull() -> None:
        try:
            with httpx.stream("POST", server.url + "/api/pull", timeout=300,
                              json={"model": name, "insecure": True}) as r:
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass  # the server died under it

    puller = threading.Thread(target=pull, daemon=True)
    try:
        puller.start()
        wait_for(lambda: faults.blob_bytes[digest] >= BLOB // 2, 240, "half the blob", server)
        time.sleep(1.5)  # the part's progress is saved every second
        kill(server)
        puller.join(60)
        first = faults.blob_bytes[digest]
        partial = partial_path(store, digest)
        assert partial.exists(), os.listdir(store.blobs_dir)
        assert not store.blob_path(digest).exists()
        # an abandoned partial of another digest, untouched for two hours
        other = store.blobs_dir / ("sha256-" + "ab" * 32 + "-partial")
        shutil.copy(partial, other)
        shutil.copy(partial.with_name(partial.name + "-0"), other.with_name(other.name + "-0"))
        age([other, other.with_name(other.name + "-0")])
    finally:
        if server.process.poll() is None:
            stop_server(server)
    faults = proxy.reset()
    server = start_server(tmp_path / "server", env)
    try:
        assert name not in tag_names(server)
        assert not store.manifest_path(ModelName.parse(name)).exists()
        left = os.listdir(store.blobs_dir)
        assert not [n for n in left if n.startswith("sha256-abab")], f"abandoned partial kept: {left}"
        r = httpx.post(server.url + "/api/pull", timeout=300,
                       json={"model": name, "insecure": True, "stream": False})
        assert r.status_code == 200 and r.json().get("status") == "success", r.text
        second = faults.blob_bytes[digest]
        assert second < BLOB, f"no resume: {first} then {second} of {BLOB} bytes\n{server.log()[-3000:]}"
        data = store.blob_path(digest).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        assert not [n for n in os.listdir(store.blobs_dir) if "-partial" in n]
        assert name in tag_names(server)
        print(f"pull killed after {first} bytes sent; resumed with {second} of {BLOB}")
    finally:
        stop_server(server)
        proxy.close()
        reg.stop()


def test_sigkill_mid_create_then_restart_is_clean(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    fifo = files / "model.gguf"
    os.mkfifo(fifo)
    env = {"CORRAL_NO_DEFAULT_MODELS": "1", "CORRAL_LOCAL_MODELS": str(files)}
    server = start_server(tmp_path / "server", env)
    store = Store(server.models_dir)
    name = ModelName.parse("half-made:latest")

    def create() -> None:
        try:
            httpx.post(server.url + "/api/create", timeout=300,
                       json={"model": "half-made", "modelfile": f"FROM {fifo}"})
        except httpx.HTTPError:
            pass

    creator = threading.Thread(target=create, daemon=True)
    temps = lambda: [p for p in store.blobs_dir.glob(".tmp-*")] if store.blobs_dir.is_dir() else []
    try:
        creator.start()
        with open(fifo, "wb") as feed:  # blocks until the server opens it
            feed.write(b"GGUF" + os.urandom(2 * MIB))
            feed.flush()
            wait_for(lambda: any(p.stat().st_size > MIB for p in temps()), 120,
                     "the create's temp blob", server)
            kill(server)
        creator.join(60)
        assert temps(), os.listdir(store.blobs_dir)
        age(temps())
    except BrokenPipeError:
        pytest.fail(f"the server closed the FIFO early\n{server.log()[-3000:]}")
    finally:
        if server.process.poll() is None:
            stop_server(server)
    os.unlink(fifo)
    make_model(store, "base:latest", size=MIB)
    server = start_server(tmp_path / "server", env)
    try:
        assert "half-made:latest" not in tag_names(server)
        assert not store.manifest_path(name).exists()
        assert not temps(), "stale temp blob kept"
        manifests = store.manifests_dir
        half = [p for p in manifests.rglob("*") if p.is_file()] if manifests.is_dir() else []
        assert [p.name for p in half] == ["latest"], f"manifests after a killed create: {half}"
        r = httpx.post(server.url + "/api/create", timeout=300, json={
            "model": "half-made", "from": "base", "system": "be brief", "stream": False})
        assert r.status_code == 200 and r.json().get("status") == "success", r.text
        assert "half-made:latest" in tag_names(server)
    finally:
        stop_server(server)


def registry_status(reg, path: str, method: str = "GET") -> int:
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    return httpx.request(method, f"{reg.url}/v2/library/pushed/{path}", timeout=60,
                         headers={"Accept": accept}).status_code


def test_sigkill_mid_push_then_restart_pushes_again(tmp_path):
    reg = start_registry(tmp_path / "registry")
    proxy = FaultProxy(reg.url)
    name = f"{proxy.host}/library/pushed:v1"
    env = {"CORRAL_NO_DEFAULT_MODELS": "1", "CORRAL_INSECURE_REGISTRIES": proxy.host}
    store = Store(tmp_path / "server" / "models")
    manifest = make_model(store, name, size=2 * MIB)
    weights = manifest.layers[0].digest
    faults = proxy.reset(upload_delay_s=600)  # the first PATCH waits until the server is gone
    server = start_server(tmp_path / "server", env)

    def push_it() -> None:
        try:
            httpx.post(server.url + "/api/push", timeout=300, json={"model": name, "insecure": True})
        except httpx.HTTPError:
            pass

    pusher = threading.Thread(target=push_it, daemon=True)
    try:
        pusher.start()
        wait_for(lambda: faults.uploads_seen > 0, 120, "a blob upload", server)
        kill(server)
        pusher.join(60)
    finally:
        if server.process.poll() is None:
            stop_server(server)
    assert registry_status(reg, "manifests/v1") == 404, "a manifest was pushed before the kill"
    assert registry_status(reg, f"blobs/{weights}", "HEAD") == 404, "a partial blob is visible"
    proxy.reset()
    server = start_server(tmp_path / "server", env)
    try:
        assert name in tag_names(server)
        r = httpx.post(server.url + "/api/push", timeout=300,
                       json={"model": name, "insecure": True, "stream": False})
        assert r.status_code == 200 and r.json().get("status") == "success", r.text
        pushed = httpx.get(f"{reg.url}/v2/library/pushed/manifests/v1", timeout=60, headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).content
        assert pushed == store.read_manifest_bytes(ModelName.parse(name))
        assert registry_status(reg, f"blobs/{weights}", "HEAD") == 200
    finally:
        stop_server(server)
        proxy.close()
        reg.stop()
