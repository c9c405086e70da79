"""Registry credentials: challenge parsing, basic credentials, and Ollama's ed25519 token signing.

A registry answers an unauthenticated request with 401 and a `WWW-Authenticate` challenge.
`Basic realm=...` wants HTTP basic credentials; `Bearer realm=...,service=...,scope=...` wants
a token from the realm, fetched anonymously, with basic credentials, or (Ollama's own registry)
with a request signed by the ed25519 key in `~/.ollama/id_ed25519` (server/auth.go).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.secrets import read_private

KEY_TYPE = "ssh-ed25519"


@dataclass(frozen=True)
class Challenge:
    scheme: str                      # "bearer" or "basic", lower-cased
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenge(header: str) -> Challenge:
    """`Bearer realm="https://x/token",service="x",scope="repository:a/b:pull"` → Challenge.

    A quoted value may hold commas and escaped quotes; unquoted values end at a comma.
    """
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            value = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(rest[i])
                i += 1
            i += 1
            params[key] = "".join(value)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return Challenge(scheme.lower(), params)


def parse_credentials_spec(spec: str) -> dict[str, tuple[str, str]]:
    """`host=user:password[,host2=user2:password2]` → {host: (user, password)}."""
    out: dict[str, tuple[str, str]] = {}
    for item in spec.split(","):
        host, sep, cred = item.strip().partition("=")
        user, sep2, password = cred.partition(":")
        if sep and sep2 and host.strip():
            out[host.strip().lower()] = (user, password)
    return out


def load_docker_auths(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Basic credentials from a docker `config.json` (`auths.<host>.auth` = base64 user:pass,
    or `username`/`password`); a missing or unreadable file gives none, a group- or
    world-readable one a warning."""
    try:
        data = json.loads(read_private(path, refuse=False))
    except (OSError, ValueError):
        return {}
    out: dict[str, tuple[str, str]] = {}
    auths = data.get("auths") if isinstance(data, dict) else None
    for host, entry in (auths or {}).items():
        if not isinstance(entry, dict):
            continue
        key = host.split("://", 1)[-1].split("/", 1)[0].lower()
        if entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, TypeError):
                continue
            if sep:
                out[key] = (user, password)
        elif entry.get("username"):
            out[key] = (str(entry["username"]), str(entry.get("password", "")))
    return out


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- ed25519 keys and Ollama's signed token requests ----------------------------------------


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ensure_keypair(path: str | os.PathLike[str]) -> bool:
    """Create `path` (OpenSSH private key) and `path.pub` if missing, as `ollama serve` does.

    Returns True when a new keypair was written.
    """
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    Path(str(path) + ".pub").write_bytes(public + b"\n")
    return True


class SigningKey:
    """An ed25519 private key read from an OpenSSH file."""

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SigningKey":
        # refused when group- or world-accessible, as ssh refuses such a key
        key = serialization.load_ssh_private_key(read_private(path, refuse=True), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an ed25519 key")
        return cls(key)

    def public_blob(self) -> bytes:
        """The SSH wire form of the public key (the base64 field of an authorized_keys line)."""
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                  serialization.PublicFormat.Raw)
        return _ssh_string(KEY_TYPE.encode()) + _ssh_string(raw)

    def sign(self, data: bytes) -> str:
        """`<base64 public key blob>:<base64 SSH signature blob>` (auth/auth.go Sign)."""
        signature = _ssh_string(KEY_TYPE.encode()) + _ssh_string(self._key.sign(data))
        return (base64.b64encode(self.public_blob()).decode() + ":"
                + base64.b64encode(signature).decode())


def token_url(challenge: Challenge, now: float | None = None, nonce: str | None = None) -> str:
    """realm?service=..&scope=..(one per scope)&ts=..&nonce=.. (server/auth.go)."""
    query: list[tuple[str, str]] = []
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    for scope in challenge.params.get("scope", "").split():
        query.append(("scope", scope))
    query.append(("ts", str(int(time.time() if now is None else now))))
    if nonce is None:
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()
    query.append(("nonce", nonce))
    sep = "&" if "?" in challenge.realm else "?"
    return challenge.realm + sep + urlencode(query)


def signed_token_data(url: str) -> bytes:
    """What Ollama signs for a token request: `GET,<url>,<base64(hex(sha256 of empty body))>`."""
    empty = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()
    return f"GET,{url},{empty}".encode()
