"""Blob downloads in parallel ranged parts, resumable, shared by concurrent pulls (download.go).

Data goes into a sparse `<blob>-partial` file; each part's progress is kept as JSON
`{"N","Offset","Size","Completed"}` in `<blob>-partial-<N>`, so an interrupted download (a cut
connection, a stopped server) re-requests only the missing ranges. The finished file is hashed
and only renamed to the blob's name when its sha256 matches: a reader never sees bad bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from registry.errors import no_space
from registry.oci.client import RegistryClient, RegistryError
from registry.store import Store, _fsync_dir

log = logging.getLogger("corral.registry.oci")

NUM_PARTS = 16
MIN_PART_SIZE = 100 * 1000 * 1000
MAX_PART_SIZE = 1000 * 1000 * 1000
_CHUNK = 1 << 20
_SAVE_EVERY_S = 1.0
_MAX_STALLS = 20


class DigestMismatch(RegistryError):
    def __init__(self, want: str, got: str):
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")


class Cancelled(Exception):
    pass


@dataclass
class Part:
    n: int
    offset: int
    size: int
    completed: int = 0

    @property
    def start(self) -> int:
        return self.offset + self.completed

    @property
    def end(self) -> int:
        """Last byte of the part (inclusive, as in a Range header)."""
        return self.offset + self.size - 1

    @property
    def done(self) -> bool:
        return self.completed >= self.size

    def to_json(self) -> bytes:
        return json.dumps({"N": self.n, "Offset": self.offset, "Size": self.size,
                           "Completed": self.completed}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Part":
        d = json.loads(data)
        part = cls(int(d["N"]), int(d["Offset"]), int(d["Size"]), int(d.get("Completed", 0)))
        if part.offset < 0 or part.size <= 0 or not 0 <= part.completed <= part.size:
            raise ValueError("bad part state")
        return part


def part_size_for(total: int, part_size: int | None = None) -> int:
    if part_size:
        return max(1, part_size)
    return min(max(total // NUM_PARTS, MIN_PART_SIZE), MAX_PART_SIZE)


def plan_parts(total: int, part_size: int | None = None) -> list[Part]:
    size = part_size_for(total, part_size)
    return [Part(n, off, min(size, total - off)) for n, off in enumerate(range(0, total, size))]


def partial_path(store: Store, digest: str) -> Path:
    path = store.blob_path(digest)
    return path.with_name(path.name + "-partial")


def part_path(store: Store, digest: str, n: int) -> Path:
    path = store.blob_path(digest)
    return path.with_name(f"{path.name}-partial-{n}")


def load_parts(store: Store, digest: str, total: int) -> list[Part] | None:
    """The saved parts of an earlier attempt, if they exactly tile [0, total) of a partial file
    of that size; None means start over."""
    data = partial_path(store, digest)
    try:
        if data.stat().st_size != total:
            return None
    except OSError:
        return None
    parts: list[Part] = []
    for path in data.parent.glob(data.name + "-*"):
        if not path.name.rsplit("-", 1)[-1].isdigit():
            continue
        try:
            parts.append(Part.from_json(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    parts.sort(key=lambda p: p.offset)
    offset = 0
    for i, part in enumerate(parts):
        if part.n != i or part.offset != offset:
            return None
        offset += part.size
    return parts if parts and offset == total else None


def remove_partial(store: Store, digest: str) -> None:
    data = partial_path(store, digest)
    for path in [data, *data.parent.glob(data.name + "-*")]:
        with contextlib.suppress(OSError):
            path.unlink()


class BlobDownload:
    """One blob's download, run on its own threads; any number of pulls may wait on it."""

    def __init__(self, store: Store, digest: str, size_hint: int, client: RegistryClient):
        self.store = store
        self.digest = digest
        self.client = client
        self.options = client.options
        self.total = size_hint
        self.parts: list[Part] = []
        self.error: Exception | None = None
        self.finished = threading.Event()
        self.waiters = 0
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._url = ""
        self._use_auth = True
        self._saved_at: dict[int, float] = {}

    @property
    def completed(self) -> int:
        with self._lock:
            return sum(p.completed for p in self.parts)

    def start(self, on_finish: Callable[["BlobDownload"], None]) -> None:
        def run() -> None:
            try:
                self._run()
            except Exception as err:  # surfaced to every waiter
                self.error = err
                if no_space(err):  # a partial that filled the disk would keep it full
                    remove_partial(self.store, self.digest)
            finally:
                self.client.close()
                on_finish(self)
                self.finished.set()

        threading.Thread(target=run, name=f"download-{self.digest[7:19]}", daemon=True).start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # --- the download --------------------------------------------------------------------

    def _run(self) -> None:
        head = self.client.request("HEAD", self.client.url(f"blobs/{self.digest}"))
        head.close()
        total = int(head.headers.get("content-length") or self.total)
        self.total = total
        self._url, self._use_auth = self.client.blob_location(self.digest)
        parts = load_parts(self.store, self.digest, total)
        data = partial_path(self.store, self.digest)
        if parts is None:
            remove_partial(self.store, self.digest)
            parts = plan_parts(total, self.options.part_size)
            data.parent.mkdir(parents=True, exist_ok=True)
            with open(data, "wb") as f:
                f.truncate(total)  # sparse: parts land at their offsets
            for part in parts:
                self._save(part)
        else:
            log.info("resuming %s at %d/%d bytes", self.digest,
                     sum(p.completed for p in parts), total)
        with self._lock:
            self.parts = parts
        fd = os.open(data, os.O_WRONLY)
        try:
            todo = [p for p in parts if not p.done]
            if todo:
                workers = max(1, min(self.options.max_parts, len(todo)))
                with ThreadPoolExecutor(workers, thread_name_prefix="part") as pool:
                    futures = [pool.submit(self._run_part, fd, p) for p in todo]
                    errors = [f.exception() for f in futures]
                first = next((e for e in errors if e is not None), None)
                if first is not None:
                    raise first
            os.fsync(fd)
        finally:
            os.close(fd)
        self._commit(data)

    def _commit(self, data: Path) -> None:
        h = hashlib.sha256()
        with open(data, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        got = "sha256:" + h.hexdigest()
        if got != self.digest.lower():
            remove_partial(self.store, self.digest)
            raise DigestMismatch(self.digest, got)
        target = self.store.blob_path(self.digest)
        os.replace(data, target)
        _fsync_dir(target.parent)
        remove_partial(self.store, self.digest)

    def _run_part(self, fd: int, part: Part) -> None:
        attempt = stalls = 0
        while not part.done:
            if self._cancel.is_set():
                raise Cancelled("download canceled")
            try:
                self._fetch(fd, part)
            except httpx.TimeoutException:
                # No bytes for stall_timeout: retried without counting, as download.go does.
                stalls += 1
                if stalls > _MAX_STALLS:
                    raise RegistryError(f"{self.digest[7:19]} part {part.n} stalled") from None
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise
                attempt = self._retry_or_raise(err, attempt)
            except (httpx.HTTPError, RegistryError) as err:
                if isinstance(err, RegistryError) and 400 <= err.status_code < 500:
                    raise
                attempt = self._retry_or_raise(err, attempt)

    def _retry_or_raise(self, err: Exception, attempt: int) -> int:
        if attempt >= self.options.retries:
            raise err
        log.info("part of %s failed (%s), retrying", self.digest[7:19], err)
        if self._cancel.wait(self.options.backoff_s(attempt)):
            raise Cancelled("download canceled")
        return attempt + 1

    def _fetch(self, fd: int, part: Part) -> None:
        headers = {"Range": f"bytes={part.start}-{part.end}", "Accept-Encoding": "identity"}
        resp = self.client.request("GET", self._url, headers=headers, stream=True,
                                   auth=self._use_auth)
        try:
            if resp.status_code != 206 and not (resp.status_code == 200 and part.start == 0
                                                 and part.size == self.total):
                raise RegistryError(f"{resp.status_code}: range request not honoured")
            for chunk in resp.iter_raw():  # unbuffered: a cut keeps every byte that arrived
                if self._cancel.is_set():
                    raise Cancelled("download canceled")
                chunk = chunk[: part.size - part.completed]
                os.pwrite(fd, chunk, part.start)
                with self._lock:
                    part.completed += len(chunk)
                self._save(part, throttle=True)
                if part.done:
                    break
            if not part.done:
                raise httpx.RemoteProtocolError("blob body ended early")
        finally:
            resp.close()
            self._save(part)

    def _save(self, part: Part, throttle: bool = False) -> None:
        now = time.monotonic()
        if throttle and now - self._saved_at.get(part.n, 0.0) < _SAVE_EVERY_S:
            return
        self._saved_at[part.n] = now
        path = part_path(self.store, self.digest, part.n)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(part.to_json())
        os.replace(tmp, path)


class DownloadManager:
    """Process-wide: one download per (store, digest), whoever asks for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], BlobDownload] = {}

    def acquire(self, store: Store, digest: str, size_hint: int,
                client_factory: Callable[[], RegistryClient]) -> BlobDownload:
        key = (str(store.blobs_dir), digest.lower())
        while True:
            with self._lock:
                dl = self._active.get(key)
                if dl is None:
                    dl = BlobDownload(store, digest, size_hint, client_factory())
                    self._active[key] = dl
                    dl.waiters = 1
                    dl.start(lambda d: self._finished(key, d))
                    return dl
                if not dl.cancelled:
                    dl.waiters += 1
                    return dl
            dl.finished.wait()  # a cancelled download is winding down; start afresh after it

    def release(self, dl: BlobDownload) -> None:
        """A waiter leaves; the download is cancelled when nobody waits any more."""
        with self._lock:
            dl.waiters -= 1
            if dl.waiters <= 0 and not dl.finished.is_set():
                dl.cancel()

    def _finished(self, key: tuple[str, str], dl: BlobDownload) -> None:
        with self._lock:
            if self._active.get(key) is dl:
                del self._active[key]


DOWNLOADS = DownloadManager()
