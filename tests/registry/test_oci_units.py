"""Units of registry.oci: challenge parsing, part planning, resume state, keys and signatures,
credentials, scheme rules, and the bearer-token dance against a mock registry."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from registry.errors import APIError
from registry.names import ModelName
from registry.oci.auth import (Challenge, SigningKey, ensure_keypair, load_docker_auths,
                               parse_challenge, parse_credentials_spec, signed_token_data,
                               token_url)
from registry.oci.client import RegistryClient, RegistryOptions, base_url
from registry.oci.download import (MAX_PART_SIZE, MIN_PART_SIZE, Part, load_parts, part_path,
                                   partial_path, plan_parts)
from registry.store import Store

MB = 1000 * 1000
DIGEST = "sha256:" + "ab" * 32


def test_parse_bearer_challenge():
    c = parse_challenge('Bearer realm="https://ollama.com:443/token",service="ollama.com",'
                        'scope="repository:library/x:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://ollama.com:443/token", "service": "ollama.com",
                        "scope": "repository:library/x:pull,push"}


def test_parse_challenge_variants():
    assert parse_challenge('Basic realm="corral test"') == Challenge("basic", {"realm": "corral test"})
    c = parse_challenge('bearer Realm=https://a/t, service=reg ,scope="a b",error="insufficient_scope"')
    assert c.params == {"realm": "https://a/t", "service": "reg", "scope": "a b",
                        "error": "insufficient_scope"}
    assert parse_challenge(r'Bearer realm="x\"y"').params == {"realm": 'x"y'}
    assert parse_challenge("Bearer").params == {}


def test_token_url_has_every_scope_then_ts_and_nonce():
    c = Challenge("bearer", {"realm": "https://r.example/token", "service": "svc",
                             "scope": "repository:a/b:pull repository:c/d:pull"})
    url = token_url(c, now=1700000000, nonce="bm9uY2U")
    assert url.startswith("https://r.example/token?")
    assert parse_qsl(urlsplit(url).query) == [
        ("service", "svc"), ("scope", "repository:a/b:pull"), ("scope", "repository:c/d:pull"),
        ("ts", "1700000000"), ("nonce", "bm9uY2U")]


@pytest.mark.parametrize("total,sizes", [
    (1, [1]),
    (250 * MB, [100 * MB, 100 * MB, 50 * MB]),
    (3200 * MB, [200 * MB] * 16),
    (40_000 * MB, [MAX_PART_SIZE] * 40),
])
def test_part_planning_follows_ollama(total, sizes):
    parts = plan_parts(total)
    assert [p.size for p in parts] == sizes
    assert [p.n for p in parts] == list(range(len(parts)))
    assert [p.offset for p in parts] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert all(MIN_PART_SIZE <= p.size <= MAX_PART_SIZE for p in parts[:-1])


def test_part_planning_with_a_small_part_size():
    parts = plan_parts(1050, part_size=100)
    assert len(parts) == 11 and parts[-1].size == 50 and parts[-1].end == 1049


def test_part_state_is_ollamas_json():
    p = Part(2, 200, 100, 40)
    assert json.loads(p.to_json()) == {"N": 2, "Offset": 200, "Size": 100, "Completed": 40}
    assert Part.from_json(p.to_json()) == p
    assert (p.start, p.end, p.done) == (240, 299, False)
    with pytest.raises(ValueError):
        Part.from_json(b'{"N":0,"Offset":0,"Size":10,"Completed":11}')


def _write_state(store: Store, total: int, parts: list[Part]) -> None:
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    with open(partial_path(store, DIGEST), "wb") as f:
        f.truncate(total)
    for p in parts:
        part_path(store, DIGEST, p.n).write_bytes(p.to_json())


def test_resume_state_round_trip(tmp_path):
    store = Store(tmp_path)
    parts = plan_parts(1000, 300)
    parts[0].completed, parts[2].completed = 300, 17
    _write_state(store, 1000, parts)
    (store.blobs_dir / (partial_path(store, DIGEST).name + "-1.tmp")).write_text("junk")
    assert load_parts(store, DIGEST, 1000) == parts


@pytest.mark.parametrize("damage", ["size", "gap", "json", "missing"])
def test_resume_state_that_does_not_tile_starts_over(tmp_path, damage):
    store = Store(tmp_path)
    parts = plan_parts(1000, 300)
    _write_state(store, 1000, parts)
    if damage == "size":
        assert load_parts(store, DIGEST, 999) is None
        return
    if damage == "gap":
        part_path(store, DIGEST, 1).write_bytes(Part(1, 310, 290).to_json())
    elif damage == "json":
        part_path(store, DIGEST, 1).write_text("{")
    else:
        part_path(store, DIGEST, 3).unlink()
    assert load_parts(store, DIGEST, 1000) is None


def _ssh_fields(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        (n,) = struct.unpack(">I", blob[i:i + 4])
        out.append(blob[i + 4:i + 4 + n])
        i += 4 + n
    return out


def test_keypair_is_openssh_and_the_signature_is_ollamas_format(tmp_path):
    path = tmp_path / ".ollama" / "id_ed25519"
    assert ensure_keypair(path) is True
    assert ensure_keypair(path) is False
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (path.stat().st_mode & 0o777) == 0o600
    pub_line = (tmp_path / ".ollama" / "id_ed25519.pub").read_text().split()
    assert pub_line[0] == "ssh-ed25519"

    key = SigningKey.load(path)
    data = signed_token_data("https://ollama.com/token?ts=1")
    empty = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()
    assert data == f"GET,https://ollama.com/token?ts=1,{empty}".encode()
    header = key.sign(data)
    pub_b64, sig_b64 = header.split(":")
    assert pub_b64 == pub_line[1]  # the authorized_keys field
    kind, raw_pub = _ssh_fields(base64.b64decode(pub_b64))
    assert kind == b"ssh-ed25519" and len(raw_pub) == 32
    kind, sig = _ssh_fields(base64.b64decode(sig_b64))
    assert kind == b"ssh-ed25519" and len(sig) == 64
    Ed25519PublicKey.from_public_bytes(raw_pub).verify(sig, data)  # raises if wrong


def test_credentials_from_spec_and_docker_config(tmp_path):
    assert parse_credentials_spec("Reg.example:5000=u:p:w, other=x:y,broken") == {
        "reg.example:5000": ("u", "p:w"), "other": ("x", "y")}
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"dock:er").decode()},
        "127.0.0.1:5000": {"username": "alice", "password": "pw"},
        "bad": {"auth": "%%%"},
    }}))
    assert load_docker_auths(cfg) == {"index.docker.io": ("dock", "er"),
                                      "127.0.0.1:5000": ("alice", "pw")}
    assert load_docker_auths(tmp_path / "missing.json") == {}


def test_scheme_rules():
    name = ModelName.parse("reg.example/ns/m:t")
    assert base_url(name, RegistryOptions()) == "https://reg.example"
    assert base_url(name, RegistryOptions(insecure=True)) == "http://reg.example"
    http = ModelName.parse("http://reg.example/ns/m:t")
    assert base_url(http, RegistryOptions(insecure=True)) == "http://reg.example"
    with pytest.raises(APIError) as err:
        base_url(http, RegistryOptions())
    assert err.value.message == "insecure protocol http"


def _mock_registry(token_key: str, seen: list[httpx.Request], *, status: int = 200):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/token":
            return httpx.Response(status, json={token_key: "tok-1"})
        if request.headers.get("authorization") != "Bearer tok-1":
            return httpx.Response(401, headers={"WWW-Authenticate": (
                'Bearer realm="https://reg.example/token",service="reg.example",'
                'scope="repository:ns/m:pull"')})
        if request.url.path.endswith("/manifests/gone"):
            return httpx.Response(404)
        if request.url.path.endswith("/manifests/broken"):
            return httpx.Response(503, text="down for maintenance")
        return httpx.Response(200, content=b"{}")
    return httpx.MockTransport(handler)


@pytest.mark.parametrize("token_key", ["token", "access_token"])
def test_bearer_challenge_anonymous_token(token_key):
    seen: list[httpx.Request] = []
    opts = RegistryOptions(transport=_mock_registry(token_key, seen), retries=1, backoff=0)
    with RegistryClient(ModelName.parse("reg.example/ns/m:t"), opts) as client:
        resp = client.request("GET", client.url("manifests/t"))
        assert resp.status_code == 200
        token_req = seen[1]
        assert token_req.url.path == "/token" and "authorization" not in token_req.headers
        q = dict(parse_qsl(token_req.url.query.decode()))
        assert q["service"] == "reg.example" and q["scope"] == "repository:ns/m:pull"
        assert "ts" in q and "nonce" in q
        assert seen[2].headers["authorization"] == "Bearer tok-1"
        with pytest.raises(APIError) as err:
            client.request("GET", client.url("manifests/gone"))
        assert err.value.message == "file does not exist"
        with pytest.raises(APIError) as err:
            client.request("GET", client.url("manifests/broken"))
        assert err.value.message == "503: down for maintenance"


def test_bearer_token_signed_with_the_ed25519_key(tmp_path):
    key_path = tmp_path / "id_ed25519"
    ensure_keypair(key_path)
    seen: list[httpx.Request] = []
    opts = RegistryOptions(transport=_mock_registry("token", seen), key_path=key_path)
    with RegistryClient(ModelName.parse("reg.example/ns/m:t"), opts) as client:
        client.request("GET", client.url("manifests/t"))
    token_req = seen[1]
    pub_b64, sig_b64 = token_req.headers["authorization"].split(":")
    raw_pub = _ssh_fields(base64.b64decode(pub_b64))[1]
    sig = _ssh_fields(base64.b64decode(sig_b64))[1]
    Ed25519PublicKey.from_public_bytes(raw_pub).verify(sig, signed_token_data(str(token_req.url)))


def test_basic_credentials_go_to_the_token_realm_and_a_refused_token_is_unauthorized():
    seen: list[httpx.Request] = []
    opts = RegistryOptions(transport=_mock_registry("token", seen, status=401),
                           credentials={"reg.example": ("u", "p")})
    with RegistryClient(ModelName.parse("reg.example/ns/m:t"), opts) as client:
        with pytest.raises(APIError) as err:
            client.request("GET", client.url("manifests/t"))
    assert err.value.message == "unauthorized: access denied"
    assert seen[1].headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
