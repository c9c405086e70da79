import hashlib


def test_root_and_version(app_client):
    r = app_client.get("/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert app_client.head("/").status_code == 200
    r = app_client.get("/api/version")
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert set(r.json()) == {"version"}


def test_unknown_path_and_wrong_method_are_gin_texts(app_client):
    r = app_client.get("/api/nope")
    assert (r.status_code, r.text) == (404, "404 page not found")
    r = app_client.post("/api/version")
    assert (r.status_code, r.text) == (405, "405 method not allowed")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_blob_upload_created_then_present(app_client, store):
    data = b"GGUF" + bytes(range(256)) * 64
    d = digest_of(data)
    assert app_client.head(f"/api/blobs/{d}").status_code == 404
    assert app_client.post(f"/api/blobs/{d}", content=data).status_code == 201
    assert app_client.post(f"/api/blobs/{d}", content=data).status_code == 200
    assert app_client.head(f"/api/blobs/{d}").status_code == 200
    assert store.read_blob(d) == data


def test_blob_bad_digest_and_mismatch(app_client, store):
    for bad in ("sha256:abc", "md5-" + "0" * 64, "sha256:" + "g" * 64, "sha256-" + "0" * 63 + "~"):
        r = app_client.post(f"/api/blobs/{bad}", content=b"x")
        assert r.status_code == 400 and r.json() == {"error": "invalid digest format"}, bad
    # a traversal never reaches the store: the router doesn't match it
    r = app_client.post("/api/blobs/..%2F..%2Fetc%2Fpasswd", content=b"x")
    assert r.status_code == 404
    assert not (store.root.parent / "etc").exists()
    d = digest_of(b"expected")
    r = app_client.post(f"/api/blobs/{d}", content=b"something else")
    assert r.status_code == 400
    assert r.json() == {"error": f'digest mismatch, expected "{d}", got "{digest_of(b"something else")}"'}
    assert not store.has_blob(d)
    assert [p.name for p in store.blobs_dir.iterdir()] == []  # no temp file left behind


def test_truncated_blob_upload_leaves_nothing(app_client, store):
    full = b"z" * 100_000
    d = digest_of(full)
    r = app_client.post(f"/api/blobs/{d}", content=full[:50_000])
    assert r.status_code == 400 and r.json()["error"].startswith("digest mismatch")
    assert not store.has_blob(d) and list(store.blobs_dir.iterdir()) == []
