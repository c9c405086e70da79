"""The disk filling up (ENOSPC) under a blob upload and a pull: the store is an 8 MiB tmpfs.

Corral answers 507 "no space left on device" over HTTP (Ollama has no code for it; a 500 would
read as a broken server), or that error as the last line of a pull stream. Nothing partial is
left behind (a pull's partial would keep the disk full), the model already there keeps its bytes,
and the server goes on serving, writes included, once the space is back."""

from __future__ import annotations

import hashlib
import json
import os

import httpx
import pytest

from registry.names import ModelName
from registry.store import Store
from tests.faults.disk import small_disk
from tests.integration.conftest import start_server, stop_server
from tests.registry.test_oci_helpers import start_registry
from tests.registry.test_oci_transfer import make_model, push

pytestmark = pytest.mark.slow
DISK_MIB = 8
MIB = 1 << 20


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """A server whose store is a small tmpfs holding one 1 MiB model, and a registry with a
    model bigger than the disk and a small one."""
    tmp = tmp_path_factory.mktemp("disk-full")
    reg = start_registry(tmp / "registry")
    src = Store(tmp / "src")
    big, small = f"{reg.host}/library/big:v1", f"{reg.host}/library/small:v1"
    make_model(src, big, size=12 * MIB)
    make_model(src, small, size=MIB // 2)
    push(src, big)
    push(src, small)
    try:
        with small_disk(tmp / "store", DISK_MIB) as models:
            existing = make_model(Store(models), "kept:latest", size=MIB)
            server = start_server(tmp / "server", {
                "CORRAL_NO_DEFAULT_MODELS": "1", "OLLAMA_MODELS": str(models),
                "CORRAL_INSECURE_REGISTRIES": reg.host})
            try:
                yield server, reg, existing, (big, small)
            finally:
                stop_server(server)
    finally:
        reg.stop()


def leftovers(server) -> list[str]:
    return [n for n in os.listdir(server.models_dir / "blobs")
            if n.startswith(".tmp-") or "-partial" in n]


def assert_kept_intact(server, existing) -> None:
    """The model that was there still lists, shows and has the exact bytes of its digest."""
    names = [m["name"] for m in httpx.get(server.url + "/api/tags", timeout=60).json()["models"]]
    assert "kept:latest" in names, names
    assert httpx.post(server.url + "/api/show", json={"model": "kept"}, timeout=60).status_code == 200
    digest = existing.layers[0].digest
    data = Store(server.models_dir).blob_path(digest).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest


def test_enospc_during_blob_upload_is_507_and_leaves_nothing(full_disk):
    server, _, existing, _ = full_disk
    data = os.urandom(12 * MIB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        r = httpx.post(f"{server.url}/api/blobs/{digest}", content=data, timeout=120)
        status, body = r.status_code, r.text
    except httpx.HTTPError as err:  # the server may close before reading the rest of the body
        status, body = 0, repr(err)
    log = server.log()[-3000:]
    assert status == 507 and "no space left on device" in body, f"{status} {body}\n{log}"
    assert not leftovers(server), leftovers(server)
    assert httpx.head(f"{server.url}/api/blobs/{digest}", timeout=60).status_code == 404
    assert_kept_intact(server, existing)
    small = os.urandom(MIB // 4)  # the space is back: writes work again
    small_digest = "sha256:" + hashlib.sha256(small).hexdigest()
    r = httpx.post(f"{server.url}/api/blobs/{small_digest}", content=small, timeout=120)
    assert r.status_code == 201, r.text


def test_enospc_during_pull_ends_the_stream_with_the_error(full_disk):
    server, _, existing, (big, small) = full_disk
    with httpx.stream("POST", server.url + "/api/pull", timeout=300,
                      json={"model": big, "insecure": True}) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
    assert lines and lines[-1].get("error") == "no space left on device", \
        f"{lines[-3:]}\n{server.log()[-3000:]}"
    assert not leftovers(server), leftovers(server)
    names = [m["name"] for m in httpx.get(server.url + "/api/tags", timeout=60).json()["models"]]
    assert big not in names and not Store(server.models_dir).manifest_path(
        ModelName.parse(big)).exists(), names
    assert_kept_intact(server, existing)
    r = httpx.post(server.url + "/api/pull", json={"model": small, "insecure": True,
                                                    "stream": False}, timeout=300)
    assert r.status_code == 200 and r.json().get("status") == "success", r.text
