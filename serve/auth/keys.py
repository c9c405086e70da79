"""API keys: who a bearer token is, its role, model patterns and limits.

Keys come from `CORRAL_API_KEY` (comma list of bare keys, each admin, as before) and from
`CORRAL_API_KEYS_FILE`, which holds only SHA-256 hashes of keys. The file is JSON or YAML:

    keys:
      - id: team-a-bot          # what logs and the audit trail name
        sha256: 9f86d0...       # hex of sha256(key); `printf %s "$KEY" | sha256sum`
        role: infer             # read | infer | admin
        models: ["team-a/*", "gemma3"]   # optional; absent means every model
        rate_limit: 120         # optional, requests per minute (default CORRAL_RATE_LIMIT)
        burst: 10               # optional, requests at once before the rate applies
                                #   (default: one minute's worth)
        concurrency: 4          # optional, requests at once (default CORRAL_CONCURRENCY_LIMIT)

The file is re-read when its mtime, size or inode changes (a Kubernetes Secret update swaps a
symlink), so keys are added and revoked without a restart; a file that no longer parses keeps
the previous keys and logs why. Lookup hashes the token and compares it with every stored hash
with `hmac.compare_digest`, never stopping early, so timing tells nothing about any key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from serve.auth.patterns import ModelPatterns
from serve.auth.roles import Role

log = logging.getLogger("corral.auth")


@dataclass(frozen=True)
class APIKey:
    id: str
    role: Role
    models: ModelPatterns = field(default_factory=ModelPatterns)
    rate_limit: float | None = None   # requests per minute; None: the server's default
    burst: float | None = None        # bucket size; None: one minute's worth of requests
    concurrency: int | None = None    # requests at once; None: the server's default


def hash_key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _entry(raw: Any, index: int) -> tuple[bytes, APIKey]:
    if not isinstance(raw, dict):
        raise ValueError(f"key #{index + 1}: expected a mapping")
    digest = str(raw.get("sha256") or "").strip().lower().removeprefix("sha256:")
    try:
        hashed = bytes.fromhex(digest)
    except ValueError:
        hashed = b""
    if len(hashed) != 32:
        raise ValueError(f"key #{index + 1}: sha256 must be 64 hex digits")
    models = raw.get("models") or ()
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models):
        raise ValueError(f"key #{index + 1}: models must be a list of strings")
    key_id = str(raw.get("id") or f"key-{digest[:8]}")
    rate, conc, burst = raw.get("rate_limit"), raw.get("concurrency"), raw.get("burst")
    return hashed, APIKey(
        id=key_id, role=Role.parse(str(raw.get("role") or "")),
        models=ModelPatterns(tuple(models)),
        rate_limit=None if rate is None else float(rate),
        burst=None if burst is None else float(burst),
        concurrency=None if conc is None else int(conc),
    )


def parse_keys_file(text: str) -> list[tuple[bytes, APIKey]]:
    data = yaml.safe_load(text) if text.strip() else {}
    entries = data.get("keys", []) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError("expected a list of keys (or a mapping with `keys:`)")
    try:
        parsed = [_entry(raw, i) for i, raw in enumerate(entries)]
    except (TypeError, AttributeError) as err:  # e.g. `rate_limit: [1]`
        raise ValueError(f"malformed key entry: {err}") from None
    ids = [k.id for _, k in parsed]
    if len(set(ids)) != len(ids):
        raise ValueError("key ids must be unique")
    return parsed


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()  # follows the Secret's symlinks: a swap changes the inode
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class KeyRing:
    """The keys this server accepts; `configured` is False when none are (an open server)."""

    def __init__(self, bare_keys: Iterable[str] = (), keys_file: Path | None = None):
        self._static = [(hash_key(k), APIKey(id=f"env-{i}", role=Role.ADMIN))
                        for i, k in enumerate(bare_keys)]
        self._file = keys_file
        self._file_keys: list[tuple[bytes, APIKey]] = []
        self._seen: tuple[int, int, int, int] | None = None
        self._lock = threading.Lock()
        if keys_file is not None:
            self._file_keys = parse_keys_file(keys_file.read_text())  # a bad file fails start-up
            self._seen = _signature(keys_file)

    @property
    def configured(self) -> bool:
        return bool(self._static) or self._file is not None

    def _reload_if_changed(self) -> None:
        if self._file is None:
            return
        current = _signature(self._file)
        if current == self._seen:
            return
        with self._lock:
            if current == self._seen:
                return
            self._seen = current
            try:
                self._file_keys = parse_keys_file(self._file.read_text())
            except (OSError, ValueError, yaml.YAMLError) as err:
                log.error("keys file %s not reloaded, keeping the previous keys: %s",
                          self._file, err)
                return
            log.info("keys file %s reloaded: %d keys", self._file, len(self._file_keys))

    def lookup(self, token: str) -> APIKey | None:
        """The key `token` is, or None. Compares against every hash, whatever matches first."""
        self._reload_if_changed()
        given = hash_key(token)
        found: APIKey | None = None
        for stored, key in [*self._static, *self._file_keys]:
            if hmac.compare_digest(given, stored) and found is None:
                found = key
        return found


