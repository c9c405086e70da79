import hashlib
import os
import threading
import time

import pytest

from registry.errors import APIError
from registry.manifest import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MODEL, Layer, Manifest
from registry.names import parse_name
from registry.store import Store, validate_digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".corral-locks" not in p.parts)


def make_model(store: Store, name: str, payload: bytes) -> Manifest:
    d, n = store.write_blob(payload)
    c, cn = store.write_blob(b'{"model_format":"gguf"}')
    m = Manifest(config=Layer(MEDIA_TYPE_CONFIG, c, cn), layers=[Layer(MEDIA_TYPE_MODEL, d, n)])
    store.write_manifest(parse_name(name), m)
    return m


@pytest.mark.parametrize("d", ["", "sha256:abc", "md5:" + "a" * 64, "sha256:" + "g" * 64, "sha256/" + "a" * 64,
                               "sha256:" + "a" * 64 + "/../x", "sha256-../../" + "a" * 58])
def test_invalid_digest(d, tmp_path):
    with pytest.raises(APIError) as e:
        Store(tmp_path).blob_path(d)
    assert (e.value.status, e.value.message) == (400, "invalid digest format")


def test_digest_forms(tmp_path):
    s = Store(tmp_path)
    assert validate_digest("sha256-" + "A" * 64) == "sha256:" + "A" * 64
    assert s.blob_path("sha256:" + "a" * 64).name == "sha256-" + "a" * 64


def test_put_blob_and_mismatch_leaves_nothing(tmp_path):
    s = Store(tmp_path)
    data = b"hello"
    assert s.put_blob(digest_of(data), iter([b"he", b"llo"])) is True
    assert s.put_blob(digest_of(data), iter([b"ignored"])) is False
    assert s.read_blob(digest_of(data)) == data
    wrong = "sha256:" + "0" * 64
    with pytest.raises(APIError) as e:
        s.put_blob(wrong, iter([b"other"]))
    assert e.value.status == 400
    assert e.value.message == f'digest mismatch, expected "{wrong}", got "{digest_of(b"other")}"'
    assert all_files(tmp_path) == ["blobs/sha256-" + digest_of(data)[7:]]


def test_truncated_upload_leaves_nothing(tmp_path):
    s = Store(tmp_path)

    def body():
        yield b"part"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        s.put_blob(digest_of(b"partial-and-more"), body())
    assert all_files(tmp_path) == []


def test_atomic_manifest_write_and_read(tmp_path):
    s = Store(tmp_path)
    m = make_model(s, "foo", b"weights")
    path = tmp_path / "manifests/registry.ollama.ai/library/foo/latest"
    assert path.read_bytes() == m.to_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["latest"]  # no temp left behind
    assert s.read_manifest(parse_name("foo")) == m


def test_list_skips_hidden_invalid_and_deep(tmp_path):
    s = Store(tmp_path)
    make_model(s, "foo", b"w")
    make_model(s, "h.com:5000/ns/bar:t", b"w")
    base = tmp_path / "manifests/registry.ollama.ai/library"
    (base / ".hidden").mkdir()
    (base / ".hidden/latest").write_text("{}")
    (base / "foo/.latest.tmp").write_text("{}")
    (base / "bad@x").mkdir()
    (base / "bad@x/latest").write_text("{}")
    (base / "deep/er").mkdir(parents=True)
    (base / "deep/er/latest").write_text("{}")
    names = sorted(n.display_shortest() for n in s.list_names())
    assert names == ["foo:latest", "h.com:5000/ns/bar:t"]



def test_a_listing_survives_a_delete_pruning_folders_under_it(tmp_path, monkeypatch):
    s = Store(tmp_path)
    make_model(s, "foo", b"w")
    make_model(s, "h.com:5000/ns/bar:t", b"w")
    doomed = tmp_path / "manifests" / "h.com:5000"
    real_scandir = os.scandir

    def scandir(path):  # the delete prunes h.com:5000 after the listing saw it, before it reads it
        if os.fspath(path) == os.fspath(doomed):
            s.delete(parse_name("h.com:5000/ns/bar:t"))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert [n.display_shortest() for n in s.list_names()] == ["foo:latest"]

def test_resolve_case_insensitive_keeps_disk_case(tmp_path):
    s = Store(tmp_path)
    make_model(s, "MyUser/Foo:Big", b"w")
    r = s.resolve(parse_name("myuser/foo:BIG"))
    assert r.parts() == ("registry.ollama.ai", "MyUser", "Foo", "Big")
    assert s.resolve(parse_name("myuser/foo:small")) is None
    assert s.canonical(parse_name("myuser/FOO:new")).parts() == ("registry.ollama.ai", "MyUser", "Foo", "new")


def test_delete_gc_keeps_shared_blobs(tmp_path):
    s = Store(tmp_path)
    a = make_model(s, "a", b"shared")
    make_model(s, "b", b"shared")
    s.copy(parse_name("a"), parse_name("c"))
    assert s.read_manifest_bytes(parse_name("c")) == a.to_bytes()
    s.delete(parse_name("a"))
    s.delete(parse_name("c"))
    assert s.has_blob(a.layers[0].digest)
    s.delete(parse_name("b"))
    assert not s.has_blob(a.layers[0].digest)
    assert not s.has_blob(a.config.digest)
    assert list((tmp_path / "manifests").iterdir()) == []


def test_a_copy_shares_its_sources_manifest_digest_until_both_are_gone(tmp_path):
    s = Store(tmp_path)
    a = make_model(s, "a", b"one")
    make_model(s, "b", b"two")
    s.copy(parse_name("a"), parse_name("c"))
    digest = hashlib.sha256(a.to_bytes()).hexdigest()
    assert len(s.manifest_digests()) == 2 and digest in s.manifest_digests()
    s.delete(parse_name("a"))
    assert digest in s.manifest_digests()  # c holds it still
    s.delete(parse_name("c"))
    assert digest not in s.manifest_digests() and len(s.manifest_digests()) == 1


def test_housekeeping(tmp_path):
    s = Store(tmp_path)
    make_model(s, "keep", b"keep")
    blobs = tmp_path / "blobs"
    legacy = blobs / ("sha256:" + "1" * 64)
    legacy.write_bytes(b"x")
    orphan_old = blobs / ("sha256-" + "2" * 64)
    orphan_old.write_bytes(b"y")
    orphan_new = blobs / ("sha256-" + "3" * 64)
    orphan_new.write_bytes(b"z")
    old = time.time() - 7200
    os.utime(orphan_old, (old, old))
    (tmp_path / "manifests/registry.ollama.ai/empty/dir").mkdir(parents=True)
    s.housekeeping(noprune=True)
    assert (blobs / ("sha256-" + "1" * 64)).exists() and not legacy.exists()
    assert orphan_old.exists()
    s.housekeeping()
    assert not orphan_old.exists() and orphan_new.exists()
    assert not (tmp_path / "manifests/registry.ollama.ai/empty").exists()
    assert s.resolve(parse_name("keep")) is not None
    assert s.has_blob(s.read_manifest(parse_name("keep")).layers[0].digest)


def test_nothing_outside_root(tmp_path):
    root = tmp_path / "store"
    s = Store(root)
    for bad in ["../../etc/passwd", "a/b/c/d/e", "..", "x/../../y"]:
        with pytest.raises(APIError):
            s.manifest_path(parse_name(bad))
    make_model(s, "ok", b"w")
    outside = [p for p in tmp_path.rglob("*") if root not in p.parents and p != root]
    assert outside == []


def test_concurrent_writes_of_one_name(tmp_path):
    s = Store(tmp_path)
    name = parse_name("race")
    errors = []

    def worker(i):
        try:
            with s.lock(name):
                with s.lock(name):  # re-entrant
                    make_model(s, "race", f"w{i}".encode())
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    d = tmp_path / "manifests/registry.ollama.ai/library/race"
    assert [p.name for p in d.iterdir()] == ["latest"]
    m = s.read_manifest(name)
    assert s.read_blob(m.layers[0].digest).startswith(b"w")
