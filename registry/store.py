"""The on-disk model store, in Ollama's layout under one root directory.

    <root>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest, one per tag
    <root>/blobs/sha256-<hex>                          content-addressed blobs

Every path comes from a validated name or digest, so nothing is written outside the root.
Blob and manifest writes go to a hidden temp file next to the target, are fsynced and renamed,
so a reader never sees a partial file. Corral's lock files live in `<root>/.corral-locks/`,
which Ollama ignores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from registry.errors import APIError
from registry.manifest import Manifest
from registry.names import ModelName, is_valid_part

_DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
_BLOB_FILE_RE = re.compile(r"^sha256-[0-9a-fA-F]{64}$")
_PARTIAL_FILE_RE = re.compile(r"^sha256-[0-9a-fA-F]{64}-partial(-\d+(\.tmp)?)?$")  # pull data + parts
_LEGACY_BLOB_FILE_RE = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
_PART_KINDS = ("host", "namespace", "model", "tag")
PRUNE_AGE_S = 3600.0
_CHUNK = 1 << 20


def validate_digest(digest: str) -> str:
    """Return the digest in `sha256:<hex>` form; APIError 400 `invalid digest format` if bad."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise APIError(400, "invalid digest format")
    return "sha256:" + digest[7:]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)



def _paths_below(root: Path, depth: int) -> list[Path]:
    """The paths exactly `depth` levels below `root`. A folder a delete prunes meanwhile is
    skipped rather than failing the listing (pathlib's glob raised FileNotFoundError, and
    /api/tags answered 500 while a delete ran)."""
    level = [root]
    for _ in range(depth):
        below: list[Path] = []
        for d in level:
            try:
                with os.scandir(d) as entries:
                    below.extend(Path(e.path) for e in entries)
            except (FileNotFoundError, NotADirectoryError):
                continue
        level = below
    return level

class BlobWriter:
    """Streams bytes into a temp file inside blobs/, hashing as it goes.

    `commit()` checks the digest (when one was expected), fsyncs and renames into place;
    `abort()` (or leaving the `with` block by an exception) removes the temp file.
    """

    def __init__(self, store: "Store", expected: str | None = None):
        self.store = store
        self.expected_param = expected
        self.expected = validate_digest(expected) if expected is not None else None
        store.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-sha256-", dir=store.blobs_dir)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._hash = hashlib.sha256()
        self.size = 0
        self.digest: str | None = None

    def write(self, data: bytes) -> int:
        if self._file is None:
            raise ValueError("blob writer is closed")
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def write_from(self, stream: BinaryIO | Iterable[bytes]) -> None:
        if hasattr(stream, "read"):
            while chunk := stream.read(_CHUNK):  # type: ignore[union-attr]
                self.write(chunk)
        else:
            for chunk in stream:  # type: ignore[union-attr]
                self.write(chunk)

    def commit(self) -> str:
        """Verify, fsync and rename; returns `sha256:<hex>`."""
        if self._file is None:
            raise ValueError("blob writer is closed")
        actual = "sha256:" + self._hash.hexdigest()
        if self.expected is not None and self.expected.lower() != actual:
            self.abort()
            raise APIError(400, f'digest mismatch, expected "{self.expected_param}", got "{actual}"')
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            target = self.store.blob_path(self.expected or actual)
            os.replace(self._tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            raise
        self.digest = self.expected or actual
        return self.digest

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._file is not None:
            self.abort()


class Store:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"
        self._locks_dir = self.root / ".corral-locks"
        self._name_locks: dict[tuple[str, ...], threading.RLock] = {}
        self._name_locks_guard = threading.Lock()
        self._lock_depth: dict[tuple[str, ...], int] = {}
        # Held while blobs may become (un)referenced: GC must not race a create's manifest write.
        self.gc_lock = threading.RLock()

    # --- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        validate_digest(digest)
        return self.blobs_dir / digest.replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: str) -> int:
        return self.blob_path(digest).stat().st_size

    def blob_writer(self, expected: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def put_blob(self, digest: str, stream: BinaryIO | Iterable[bytes]) -> bool:
        """Store a client upload under `digest`; False if it was already present."""
        if self.has_blob(digest):
            return False
        with self.blob_writer(digest) as w:
            w.write_from(stream)
            w.commit()
        return True

    def write_blob(self, data: bytes) -> tuple[str, int]:
        """Store bytes; returns (digest, size). Existing content is left untouched."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            with self.blob_writer(digest) as w:
                w.write(data)
                w.commit()
        return digest, len(data)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # --- manifests -----------------------------------------------------------------------

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir.joinpath(*name.filepath().split("/"))

    def resolve(self, name: ModelName) -> ModelName | None:
        """The existing manifest's name matching `name` case-insensitively, on-disk case kept."""
        if not name.is_valid():
            return None
        d = self.manifests_dir
        parts: list[str] = []
        for i, part in enumerate(name.parts()):
            if (d / part).exists() and self._entry_ok(d / part, i == 3):
                found = part
            else:
                found = None
                with contextlib.suppress(OSError):
                    for entry in sorted(os.listdir(d)):
                        if entry.lower() == part.lower() and self._entry_ok(d / entry, i == 3):
                            found = entry
                            break
                if found is None:
                    return None
            parts.append(found)
            d = d / found
        return name.with_parts(tuple(parts))  # type: ignore[arg-type]

    @staticmethod
    def _entry_ok(path: Path, leaf: bool) -> bool:
        return path.is_file() if leaf else path.is_dir()

    def canonical(self, name: ModelName) -> ModelName:
        """Rewrite each part to the case of existing directories (getExistingName), for writes."""
        d = self.manifests_dir
        parts: list[str] = []
        for part in name.parts():
            found = part
            if not (d / part).exists():
                with contextlib.suppress(OSError):
                    for entry in sorted(os.listdir(d)):
                        if entry.lower() == part.lower():
                            found = entry
                            break
            parts.append(found)
            d = d / found
        return name.with_parts(tuple(parts))  # type: ignore[arg-type]

    def read_manifest_bytes(self, name: ModelName) -> bytes:
        return self.manifest_path(name).read_bytes()

    def read_manifest(self, name: ModelName) -> Manifest:
        return Manifest.from_bytes(self.read_manifest_bytes(name))

    def write_manifest(self, name: ModelName, manifest: Manifest | bytes) -> None:
        data = manifest if isinstance(manifest, bytes) else manifest.to_bytes()
        _atomic_write(self.manifest_path(name), data)

    def list_names(self) -> list[ModelName]:
        """Every valid name exactly 4 levels below manifests/ (hidden or invalid skipped)."""
        out: list[ModelName] = []
        if not self.manifests_dir.is_dir():
            return out
        for path in sorted(_paths_below(self.manifests_dir, 4)):
            rel = path.relative_to(self.manifests_dir).parts
            if any(p.startswith(".") for p in rel) or not path.is_file():
                continue
            if not all(is_valid_part(k, p) for k, p in zip(_PART_KINDS, rel)):
                continue
            out.append(ModelName(*rel, scheme="https"))
        return out

    def manifests(self) -> dict[ModelName, Manifest]:
        out: dict[ModelName, Manifest] = {}
        for name in self.list_names():
            with contextlib.suppress(OSError, ValueError):
                out[name] = self.read_manifest(name)
        return out

    def manifest_digests(self) -> set[str]:
        """sha256 hex of each name's manifest bytes: a model's identity (Model.digest), shared
        by a copy and its source, and what residency keys a loaded model by."""
        out: set[str] = set()
        for name in self.list_names():
            with contextlib.suppress(OSError):
                out.add(hashlib.sha256(self.read_manifest_bytes(name)).hexdigest())
        return out

    def referenced_digests(self) -> set[str]:
        refs: set[str] = set()
        for m in self.manifests().values():
            refs.update(layer.digest.replace("-", ":", 1) for layer in m.all_layers())
        return refs

    # --- delete / copy -------------------------------------------------------------------

    def remove_manifest(self, name: ModelName) -> Manifest | None:
        """Remove a manifest and prune empty parent directories; returns what it held."""
        path = self.manifest_path(name)
        try:
            manifest = Manifest.from_bytes(path.read_bytes())
        except (OSError, ValueError):
            manifest = None
        path.unlink()
        self._prune_empty_dirs(path.parent)
        return manifest

    def _prune_empty_dirs(self, d: Path) -> None:
        while d != self.manifests_dir and self.manifests_dir in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    def remove_unreferenced(self, digests: Iterable[str]) -> list[str]:
        """Delete the given blobs that no manifest references any more."""
        removed: list[str] = []
        with self.gc_lock:
            refs = self.referenced_digests()
            for digest in set(digests):
                with contextlib.suppress(APIError):
                    if validate_digest(digest) in refs:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        self.blob_path(digest).unlink()
                        removed.append(digest)
        return removed

    def delete(self, name: ModelName) -> None:
        """Remove the manifest of an existing (resolved) name and GC its now-unused blobs."""
        with self.lock(name), self.gc_lock:
            manifest = self.remove_manifest(name)
            if manifest is not None:
                self.remove_unreferenced(layer.digest for layer in manifest.all_layers())

    def copy(self, src: ModelName, dst: ModelName) -> ModelName:
        """Byte copy of a manifest; the destination is case-canonicalized. Returns it."""
        data = self.read_manifest_bytes(src)
        with self.lock(dst):
            dst = self.canonical(dst)
            self.write_manifest(dst, data)
        return dst

    # --- housekeeping --------------------------------------------------------------------

    def housekeeping(self, noprune: bool = False, now: float | None = None) -> None:
        """Startup chores: rename legacy `sha256:` blob files; unless noprune, delete
        unreferenced blobs, temp files and pull partials untouched for an hour (a later pull
        resumes a fresher partial), and empty manifest dirs."""
        if not self.blobs_dir.is_dir():
            return
        for entry in os.listdir(self.blobs_dir):
            if _LEGACY_BLOB_FILE_RE.match(entry):
                src = self.blobs_dir / entry
                dst = self.blobs_dir / entry.replace(":", "-")
                if dst.exists():
                    src.unlink()
                else:
                    os.replace(src, dst)
        if noprune:
            return
        now = time.time() if now is None else now
        with self.gc_lock:
            refs = self.referenced_digests()
            for entry in os.listdir(self.blobs_dir):
                path = self.blobs_dir / entry
                stale = entry.startswith(".tmp-") or _PARTIAL_FILE_RE.match(entry) or (
                    _BLOB_FILE_RE.match(entry) and entry.replace("-", ":", 1) not in refs
                )
                with contextlib.suppress(OSError):
                    if stale and now - path.stat().st_mtime > PRUNE_AGE_S:
                        path.unlink()
        if self.manifests_dir.is_dir():
            for dirpath, dirnames, filenames in os.walk(self.manifests_dir, topdown=False):
                if Path(dirpath) != self.manifests_dir and not os.listdir(dirpath):
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)

    # --- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: ModelName) -> Iterator[None]:
        """Exclusive per-name lock across threads (RLock) and processes (fcntl)."""
        key = name.key()
        with self._name_locks_guard:
            tlock = self._name_locks.setdefault(key, threading.RLock())
        with tlock:
            depth = self._lock_depth.get(key, 0)
            self._lock_depth[key] = depth + 1
            try:
                if depth:
                    yield  # re-entered by the holding thread: the file lock is already ours
                    return
                self._locks_dir.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256("/".join(key).encode()).hexdigest()[:32]
                with open(self._locks_dir / f"{digest}.lock", "a+b") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                    try:
                        yield
                    finally:
                        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_depth[key] = depth
