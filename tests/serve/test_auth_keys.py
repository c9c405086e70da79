"""Keys: the file format, reload on change (a Kubernetes Secret's symlink swap included),
comparison against every stored hash, model patterns, limits and log redaction."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest

from serve.auth import keys as keys_module
from serve.auth import redact
from serve.auth.keys import KeyRing, parse_keys_file
from serve.auth.limits import ConcurrencyLimiter, RateLimiter, retry_after
from serve.auth.patterns import ModelPatterns
from serve.auth.roles import Role


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def keys_yaml(*entries: tuple[str, str, str]) -> str:
    lines = ["keys:"]
    for key_id, token, role in entries:
        lines += [f"  - id: {key_id}", f"    sha256: {sha(token)}", f"    role: {role}"]
    return "\n".join(lines) + "\n"


def test_file_entries_parse_with_roles_patterns_and_limits():
    text = ('{"keys": [{"id": "bot", "sha256": "%s", "role": "infer", "models": ["team-a/*"],'
            ' "rate_limit": 30, "burst": 2, "concurrency": 4}]}' % sha("t"))
    [(hashed, key)] = parse_keys_file(text)  # JSON is YAML too
    assert hashed == hashlib.sha256(b"t").digest()
    assert (key.id, key.role, key.models.patterns) == ("bot", Role.INFER, ("team-a/*",))
    assert (key.rate_limit, key.burst, key.concurrency) == (30.0, 2.0, 4)


@pytest.mark.parametrize("bad", [
    "keys: [{sha256: abc, role: read}]",                       # not 64 hex digits
    f"keys: [{{sha256: {sha('a')}, role: root}}]",             # no such role
    f"keys: [{{id: x, sha256: {sha('a')}, role: read}}, {{id: x, sha256: {sha('b')}, role: read}}]",
    "keys: 3",
    f"keys: [{{sha256: {sha('a')}, role: read, rate_limit: [1]}}]",
    f"keys: [{{sha256: {sha('a')}, role: read, models: {{a: 1}}}}]",
])
def test_bad_files_are_refused(bad):
    with pytest.raises(ValueError):
        parse_keys_file(bad)


def test_bare_keys_are_admin_and_file_keys_have_their_role(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(keys_yaml(("r", "k-read", "read"), ("i", "k-infer", "infer")))
    ring = KeyRing(["k-bare"], path)
    assert ring.lookup("k-bare").role is Role.ADMIN
    assert ring.lookup("k-read").role is Role.READ and ring.lookup("k-read").id == "r"
    assert ring.lookup("k-infer").role is Role.INFER
    assert ring.lookup("nope") is None and ring.lookup("") is None
    assert not KeyRing().configured and KeyRing(["x"]).configured


def _bump_mtime(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_file_is_reloaded_when_it_changes(tmp_path, caplog):
    path = tmp_path / "keys.yaml"
    path.write_text(keys_yaml(("a", "k-aaaa", "read")))
    ring = KeyRing([], path)
    assert ring.lookup("k-aaaa") is not None
    # same size, new content and mtime: the key is replaced
    path.write_text(keys_yaml(("a", "k-bbbb", "read")))
    _bump_mtime(path)
    assert ring.lookup("k-aaaa") is None and ring.lookup("k-bbbb") is not None
    # a broken edit keeps the previous keys and says why
    path.write_text("keys: [{role: nope}]\n")
    with caplog.at_level(logging.ERROR, logger="corral.auth"):
        assert ring.lookup("k-bbbb") is not None
    assert "not reloaded" in caplog.text, caplog.text


def test_secret_symlink_swap_is_a_change(tmp_path):
    """Kubernetes mounts keys.yaml -> ..data/keys.yaml, ..data -> ..<timestamp>/ and swaps
    ..data atomically on update: same path, same size possible, new inode."""
    mount = tmp_path / "secret"
    for version, token in (("..v1", "k-one1"), ("..v2", "k-two2")):
        (mount / version).mkdir(parents=True)
        (mount / version / "keys.yaml").write_text(keys_yaml(("a", token, "infer")))
    os.symlink("..v1", mount / "..data")
    os.symlink("..data/keys.yaml", mount / "keys.yaml")
    ring = KeyRing([], mount / "keys.yaml")
    assert ring.lookup("k-one1") is not None
    os.symlink("..v2", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    assert ring.lookup("k-one1") is None and ring.lookup("k-two2").role is Role.INFER


def test_lookup_compares_with_every_key_whatever_matches(tmp_path, monkeypatch):
    """No early exit: the same number of constant-time comparisons for the first key, the
    last key, a prefix of a key and no key at all; and they compare digests, not the tokens."""
    tokens = [f"key-number-{i}-secret" for i in range(6)]
    path = tmp_path / "keys.yaml"
    path.write_text(keys_yaml(*[(f"id{i}", t, "read") for i, t in enumerate(tokens)]))
    ring = KeyRing(["bare-admin-key"], path)
    calls: list[tuple[int, int]] = []
    real = keys_module.hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    for token in (tokens[0], tokens[-1], "bare-admin-key", tokens[3][:5], "wrong"):
        calls.clear()
        ring.lookup(token)
        assert len(calls) == 7, (token, calls)
        assert all(pair == (32, 32) for pair in calls)


@pytest.mark.parametrize("pattern,name,allowed", [
    ("gemma3", "gemma3:270m", True),
    ("gemma3", "gemma3", True),
    ("gemma3:270m", "gemma3:latest", False),
    ("gemma3:270m", "GEMMA3:270M", True),
    ("team-a/*", "team-a/chat", True),
    ("team-a/*", "team-b/chat", False),
    ("team-a/*", "registry.ollama.ai/team-a/chat:v1", True),
    ("registry.ollama.ai/library/*", "gemma3", True),
    ("llama*", "gemma3", False),
    ("host:5000/ns/*", "host:5000/ns/m:v1", True),
])
def test_model_patterns(pattern, name, allowed):
    assert ModelPatterns((pattern,)).allows(name) is allowed
    assert ModelPatterns(()).allows(name)


def test_rate_limit_bucket_and_retry_after():
    now = [1000.0]
    rates = RateLimiter(clock=lambda: now[0])
    assert rates.take("k", 30, burst=2) == 0 and rates.take("k", 30, burst=2) == 0
    wait = rates.take("k", 30, burst=2)
    assert wait == pytest.approx(2.0) and retry_after(wait) == "2"
    assert rates.take("other", 30, burst=2) == 0  # per key
    now[0] += wait
    assert rates.take("k", 30, burst=2) == 0
    assert rates.take("k", 0) == 0  # no limit
    assert retry_after(0.01) == "1"


def test_concurrency_limit_counts_per_key():
    held = ConcurrencyLimiter()
    assert held.acquire("k", 2) and held.acquire("k", 2) and not held.acquire("k", 2)
    assert held.acquire("j", 2)
    held.release("k")
    assert held.acquire("k", 2)
    assert all(held.acquire("free", 0) for _ in range(50))


@pytest.mark.parametrize("text,secret", [
    ("Authorization: Bearer sk-live-0123456789", "sk-live-0123456789"),
    ("headers=[(b'authorization', b'Bearer tok-abcdef12')]", "tok-abcdef12"),
    ("{'Authorization': 'Basic dXNlcjpodW50ZXIy'}", "dXNlcjpodW50ZXIy"),
    ('pull body {"model": "m", "username": "u", "password": "hunter22"}', "hunter22"),
    ("GET https://bob:s3cretpw@registry.example/v2/", "s3cretpw"),
    ("x-api-key=ak-998877", "ak-998877"),
    ("token=eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
])
def test_redaction_masks_credentials(text, secret):
    out = redact.redact(text)
    assert secret not in out and redact.MASK in out, out


def test_redaction_keeps_ordinary_text():
    for text in ("prompt_tokens=5 max_tokens=3", "keys file reloaded: 3 keys", "author: x",
                 "POST /api/chat 200"):
        assert redact.redact(text) == text


def test_every_logger_is_redacted_once_installed(caplog):
    previous = logging.getLogRecordFactory()
    try:
        redact.install()
        redact.install()  # idempotent: one wrapper
        redact.add_secrets(["configured-key-1234"])
        logger = logging.getLogger("tests.auth.redaction.probe")
        logger.propagate = True
        with caplog.at_level(logging.INFO, logger="tests.auth.redaction.probe"):
            logger.info("request headers %s", [(b"authorization", b"Bearer configured-key-1234")])
            logger.info("key %s used", "configured-key-1234")
            logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/api/tags", "1.1", 200)
        text = caplog.text
        assert "configured-key-1234" not in text and "[REDACTED]" in text, text
        assert '"GET /api/tags HTTP/1.1" 200' in text  # args keep their types for formatters
    finally:
        logging.setLogRecordFactory(previous)
