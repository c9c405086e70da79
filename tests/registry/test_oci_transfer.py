"""Pull and push against Debian's real OCI registry on loopback, with synthetic models small
enough to move in a moment, split into several parts, through a fault-injecting proxy."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import httpx
import pytest

from registry.errors import APIError
from registry.manifest import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MODEL, MEDIA_TYPE_SYSTEM, ConfigV2, Layer, Manifest
from registry.names import ModelName
from registry.oci import RegistryOptions, pull_model, push_model
from registry.oci.download import partial_path
from registry.store import Store
from tests.registry.test_oci_helpers import FaultProxy, start_registry


SIZE = 3_000_000
PART = 500_000  # six parts


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("oci-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("oci-auth-registry"), users={"alice": "s3cret"})
    yield reg
    reg.stop()


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.url)
    yield p
    p.close()


def options(**kw) -> RegistryOptions:
    base = dict(insecure=True, part_size=PART, backoff=0.01, stall_timeout=10)
    base.update(kw)
    return RegistryOptions(**base)


def make_model(store: Store, name: str, size: int = SIZE, system: str = "",
               from_: str = "") -> Manifest:
    weights, n = store.write_blob(os.urandom(size))
    layers = [Layer(MEDIA_TYPE_MODEL, weights, n, from_=from_)]
    if system:
        d, sn = store.write_blob(system.encode())
        layers.append(Layer(MEDIA_TYPE_SYSTEM, d, sn))
    config, cn = store.write_blob(ConfigV2(model_format="gguf", model_family="synth").to_bytes())
    manifest = Manifest(Layer(MEDIA_TYPE_CONFIG, config, cn), layers)
    store.write_manifest(ModelName.parse(name), manifest)
    return manifest


def push(store: Store, name: str, **kw) -> list[dict]:
    return list(push_model(store, name, options(**kw)))


def pull(store: Store, name: str, **kw) -> list[dict]:
    return list(pull_model(store, name, options(**kw)))


def statuses(events: list[dict]) -> list[str]:
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e["status"]:
            out.append(e["status"])
    return out


def weights_of(m: Manifest) -> str:
    return m.layers[0].digest


def assert_clean(store: Store, digest: str) -> None:
    partial = partial_path(store, digest)
    assert not [p for p in partial.parent.glob(partial.name + "*")]


@pytest.fixture
def pushed(registry, tmp_path):
    """A model pushed to the registry as <host>/library/synth-<test>:v1."""
    src = Store(tmp_path / "src")
    name = f"{registry.host}/library/synth-{abs(hash(tmp_path)) % 10**8}:v1"
    manifest = make_model(src, name, system="be brief")
    push(src, name)
    return name, manifest, src


def test_push_then_pull_round_trip(registry, proxy, tmp_path):
    src = Store(tmp_path / "src")
    name = f"{registry.host}/library/roundtrip:v1"
    manifest = make_model(src, name, system="hello")
    events = push(src, name)
    assert statuses(events)[0] == "retrieving manifest"
    assert statuses(events)[-2:] == ["pushing manifest", "success"]
    for layer in manifest.all_layers():
        mine = [e for e in events if e.get("digest") == layer.digest]
        assert mine and mine[0]["status"] == f"pushing {layer.digest[7:19]}"
        assert mine[-1]["completed"] == mine[-1]["total"] == layer.size
    # the registry holds the local manifest bytes verbatim
    remote = httpx.get(f"{registry.url}/v2/library/roundtrip/manifests/v1",
                       headers={"Accept": manifest.media_type})
    assert remote.content == src.read_manifest_bytes(ModelName.parse(name))

    dst = Store(tmp_path / "dst")
    via = f"{proxy.host}/library/roundtrip:v1"
    events = pull(dst, via)
    assert statuses(events)[0] == "pulling manifest"
    assert statuses(events)[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    for layer in manifest.all_layers():
        mine = [e for e in events if e.get("digest") == layer.digest]
        assert mine[0]["status"] == f"pulling {layer.digest[7:19]}"
        assert mine[-1] == {"status": f"pulling {layer.digest[7:19]}", "digest": layer.digest,
                            "total": layer.size, "completed": layer.size}
        data = dst.read_blob(layer.digest)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
        assert data == src.read_blob(layer.digest)
        assert_clean(dst, layer.digest)
    assert dst.read_manifest_bytes(ModelName.parse(via)) == remote.content
    # several ranged parts (plus the location probe), each byte served once
    weights = weights_of(manifest)
    assert proxy.faults.blob_gets[weights] == SIZE // PART + 1
    assert proxy.faults.blob_bytes[weights] == SIZE + 1

    # a second pull finds every blob present: one message each, nothing downloaded
    proxy.reset()
    events = pull(dst, via)
    for layer in manifest.all_layers():
        mine = [e for e in events if e.get("digest") == layer.digest]
        assert mine == [{"status": f"pulling {layer.digest[7:19]}", "digest": layer.digest,
                         "total": layer.size, "completed": layer.size}]
    assert not proxy.faults.blob_gets


def test_pushing_again_reports_existing_layers_complete(pushed):
    name, manifest, src = pushed
    events = push(src, name)
    for layer in manifest.all_layers():
        mine = [e for e in events if e.get("digest") == layer.digest]
        assert mine == [{"status": f"pushing {layer.digest[7:19]}", "digest": layer.digest,
                         "total": layer.size, "completed": layer.size}]


def test_cross_repository_mount(registry, pushed, tmp_path):
    name, manifest, src = pushed
    base = ModelName.parse(name)
    derived = f"{registry.host}/library/derived:latest"
    weights = manifest.layers[0]
    m2 = Manifest(manifest.config, [Layer(weights.media_type, weights.digest, weights.size,
                                          from_=name)])
    src.write_manifest(ModelName.parse(derived), m2)
    proxy = FaultProxy(registry.url)
    try:
        via = f"{proxy.host}/library/derived:latest"
        src.copy(ModelName.parse(derived), ModelName.parse(via))
        events = push(src, via)
        mounts = [r for r in proxy.faults.requests
                  if r[0] == "POST" and "mount=" in r[1] and f"from={base.namespace}%2F{base.model}" in r[1]]
        assert mounts and mounts[0][2] == 201
        # only the small config blob (no `from`) is uploaded, in one chunk
        assert len([r for r in proxy.faults.requests if r[0] == "PATCH"]) == 1
        assert events[-1] == {"status": "success"}
    finally:
        proxy.close()


def test_replaced_tag_removes_unused_layers(registry, tmp_path):
    src = Store(tmp_path / "src")
    name = f"{registry.host}/library/replaced:latest"
    first = make_model(src, name, size=100_000)
    push(src, name)
    dst = Store(tmp_path / "dst")
    pull(dst, name)
    assert dst.has_blob(weights_of(first))
    second = make_model(src, name, size=100_000)
    push(src, name)
    events = pull(dst, name)
    assert statuses(events)[-3:] == ["writing manifest", "removing unused layers", "success"]
    assert not dst.has_blob(weights_of(first))
    assert dst.has_blob(weights_of(second))


def test_missing_tag_is_ollamas_error(registry, pushed, tmp_path):
    name, _, _ = pushed
    dst = Store(tmp_path / "dst")
    for missing in (name.rsplit(":", 1)[0] + ":nope", f"{registry.host}/library/absent:latest"):
        with pytest.raises(APIError) as err:  # before any progress: a 404 status, no stream
            pull_model(dst, missing, options())
        assert (err.value.status, err.value.message) == (
            404, "pull model manifest: file does not exist")
    assert not dst.list_names()


def test_http_needs_insecure(registry, tmp_path):
    with pytest.raises(APIError) as err:
        pull_model(Store(tmp_path), f"http://{registry.host}/library/x:latest",
                   RegistryOptions(insecure=False))
    assert err.value.message == "insecure protocol http"
    with pytest.raises(APIError) as err:
        pull_model(Store(tmp_path), "bad name!", options())
    assert (err.value.status, err.value.message) == (400, "invalid model name")


def test_cut_connection_resumes_within_the_pull(pushed, proxy, tmp_path):
    name, manifest, _ = pushed
    weights = weights_of(manifest)
    faults = proxy.reset(cut_after=1_200_000)
    dst = Store(tmp_path / "dst")
    via = name.replace(pushed[0].split("/")[0], proxy.host)
    events = pull(dst, via)
    assert events[-1] == {"status": "success"}
    assert faults.cuts == 1
    assert faults.blob_gets[weights] > SIZE // PART + 1  # the cut part was asked for again...
    assert faults.blob_bytes[weights] == SIZE + 1  # ...from where it stopped
    assert dst.read_blob(weights) == pushed[2].read_blob(weights)
    assert_clean(dst, weights)


def test_interrupted_pull_resumes_after_restart(pushed, proxy, tmp_path):
    name, manifest, src = pushed
    weights = weights_of(manifest)
    faults = proxy.reset(cut_after=1_700_000)
    dst = Store(tmp_path / "dst")
    via = name.replace(name.split("/")[0], proxy.host)
    with pytest.raises(APIError):
        pull(dst, via, retries=0)
    first = faults.blob_bytes[weights]
    assert 0 < first < SIZE + 1
    assert not dst.has_blob(weights) and not dst.list_names()
    assert partial_path(dst, weights).exists()

    faults = proxy.reset()
    events = pull(Store(tmp_path / "dst"), via)  # as after a restart: state from disk
    assert events[-1] == {"status": "success"}
    assert first + faults.blob_bytes[weights] == SIZE + 2  # two location probes, no byte twice
    resumed = [e for e in events if e.get("digest") == weights]
    assert resumed[0]["completed"] >= first - 1
    assert dst.read_blob(weights) == src.read_blob(weights)
    assert_clean(dst, weights)


def test_corrupted_bytes_leave_no_blob_and_no_manifest(pushed, proxy, tmp_path):
    name, manifest, _ = pushed
    weights = weights_of(manifest)
    proxy.reset(corrupt=True)
    dst = Store(tmp_path / "dst")
    via = name.replace(name.split("/")[0], proxy.host)
    events: list[dict] = []
    with pytest.raises(APIError) as err:
        for e in pull_model(dst, via, options()):
            events.append(e)
    assert err.value.message.startswith(
        f"digest mismatch, file must be downloaded again: want {weights}, got sha256:")
    assert events[-1] == {"status": "verifying sha256 digest"}
    for layer in manifest.all_layers():
        assert not dst.has_blob(layer.digest)
        assert_clean(dst, layer.digest)
    assert not dst.list_names()


def test_concurrent_pulls_share_one_download(pushed, proxy, tmp_path):
    name, manifest, src = pushed
    faults = proxy.reset(delay_s=0.02)
    dst = Store(tmp_path / "dst")
    via = name.replace(name.split("/")[0], proxy.host)
    results: list[list[dict] | BaseException] = [[], []]

    def run(i: int) -> None:
        try:
            results[i] = pull(dst, via)
        except BaseException as err:  # reported below
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in results:
        assert isinstance(r, list) and r[-1] == {"status": "success"}, r
    for layer in manifest.all_layers():
        served = faults.blob_bytes[layer.digest]
        assert served == layer.size + 1, (layer, served)
        assert dst.read_blob(layer.digest) == src.read_blob(layer.digest)


def test_leaving_cancels_the_download_and_keeps_its_state(pushed, proxy, tmp_path):
    name, manifest, src = pushed
    weights = weights_of(manifest)
    proxy.reset(delay_s=0.05)
    dst = Store(tmp_path / "dst")
    via = name.replace(name.split("/")[0], proxy.host)
    gen = pull_model(dst, via, options())
    for e in gen:
        if e.get("digest") == weights and e["completed"] > 0:
            break
    gen.close()  # the only waiter leaves
    from registry.oci.download import DOWNLOADS
    for dl in list(DOWNLOADS._active.values()):
        dl.finished.wait(30)
    assert not dst.has_blob(weights)
    assert partial_path(dst, weights).exists()
    faults = proxy.reset()
    assert pull(dst, via)[-1] == {"status": "success"}
    assert faults.blob_bytes[weights] < SIZE
    assert dst.read_blob(weights) == src.read_blob(weights)


def test_basic_auth_registry(auth_registry, tmp_path):
    host = auth_registry.host
    creds = {host: ("alice", "s3cret")}
    src = Store(tmp_path / "src")
    name = f"{host}/library/private:latest"
    manifest = make_model(src, name, size=200_000)
    assert push(src, name, credentials=creds)[-1] == {"status": "success"}
    dst = Store(tmp_path / "dst")
    assert pull(dst, name, credentials=creds)[-1] == {"status": "success"}
    assert dst.read_manifest_bytes(ModelName.parse(name)) == src.read_manifest_bytes(ModelName.parse(name))
    assert dst.read_blob(weights_of(manifest)) == src.read_blob(weights_of(manifest))

    for bad in ({}, {host: ("alice", "wrong")}):
        with pytest.raises(APIError) as err:
            pull(Store(tmp_path / "other"), name, credentials=bad)
        assert err.value.message == "pull model manifest: unauthorized: access denied"
        with pytest.raises(APIError) as err:
            push(src, name, credentials=bad)
        assert err.value.message == "unauthorized: access denied"
