"""Blob uploads: existence check, cross-repository mount, or a chunked upload session.

The OCI distribution flow (upload.go, distribution spec "Pushing a blob in chunks"): POST
starts a session, each PATCH appends `Content-Range: <start>-<end>` and returns the next URL in
`Location` (or `Docker-Upload-Location`), a PUT with `?digest=` closes it. A failed chunk asks
the session how far it got (GET, `Range: 0-<last>`) and goes on from there.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode, urljoin

import httpx

from registry.manifest import Layer
from registry.names import ModelName
from registry.oci.client import RegistryClient, RegistryError
from registry.oci.download import part_size_for

_READ = 1 << 20


class Upload:
    """One layer's upload state, shared between the uploading thread and the progress reporter."""

    def __init__(self, client: RegistryClient, layer: Layer, path: Path):
        self.client = client
        self.layer = layer
        self.path = path
        self.completed = 0
        self.cancel = threading.Event()

    def exists(self) -> bool:
        resp = self.client.request("HEAD", self.client.url(f"blobs/{self.layer.digest}"),
                                   ok_status=(404,))
        resp.close()
        return resp.status_code == 200

    def mount_source(self) -> str | None:
        """`<ns>/<model>` of the layer's `from` model when that is another repository."""
        if not self.layer.from_:
            return None
        src = ModelName.parse(self.layer.from_)
        repo = f"{src.namespace}/{src.model}"
        if not src.is_valid() or repo.lower() == self.client.repo.lower():
            return None
        return repo

    def start(self) -> str | None:
        """POST the session; None when the blob was mounted (201), else the upload URL."""
        url = self.client.url("blobs/uploads/")
        source = self.mount_source()
        if source:
            url += "?" + urlencode({"mount": self.layer.digest, "from": source})
        resp = self.client.request("POST", url, content=b"")
        resp.close()
        if resp.status_code == 201:
            return None
        return self._next_url(resp, url)

    @staticmethod
    def _next_url(resp: httpx.Response, base: str) -> str:
        location = resp.headers.get("docker-upload-location") or resp.headers.get("location")
        if not location:
            raise RegistryError(f"{resp.status_code}: upload session without a Location")
        return urljoin(base, location)

    def run(self, url: str, chunk_size: int | None) -> None:
        size = self.layer.size
        chunk = part_size_for(size, chunk_size)
        offset, attempt = 0, 0
        while offset < size:
            n = min(chunk, size - offset)
            try:
                url = self._patch(url, offset, n)
                offset += n
                attempt = 0
            except (httpx.HTTPError, RegistryError) as err:
                if self.cancel.is_set() or attempt >= self.client.options.retries:
                    raise
                if self.cancel.wait(self.client.options.backoff_s(attempt)):
                    raise RegistryError("upload canceled") from err
                attempt += 1
                offset = self._session_offset(url)
                self.completed = offset
        sep = "&" if "?" in url else "?"
        resp = self.client.request("PUT", url + sep + urlencode({"digest": self.layer.digest}),
                                   headers={"Content-Length": "0"}, content=b"")
        resp.close()

    def _patch(self, url: str, offset: int, n: int) -> str:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(n),
            "Content-Range": f"{offset}-{offset + n - 1}",
            "X-Redirect-Uploads": "1",
        }
        resp = self.client.request("PATCH", url, headers=headers,
                                   content=lambda: self._read(offset, n))
        resp.close()
        return self._next_url(resp, url)

    def _read(self, offset: int, n: int) -> Iterator[bytes]:
        self.completed = offset
        with open(self.path, "rb") as f:
            f.seek(offset)
            while n > 0:
                if self.cancel.is_set():
                    raise RegistryError("upload canceled")
                data = f.read(min(_READ, n))
                if not data:
                    raise RegistryError(f"{self.path}: blob shorter than its layer size")
                n -= len(data)
                self.completed += len(data)
                yield data

    def _session_offset(self, url: str) -> int:
        """How many bytes the session holds (`Range: 0-<last>`), to go on after a failure."""
        resp = self.client.request("GET", url, ok_status=(204,))
        resp.close()
        rng = resp.headers.get("range", "")
        try:
            return int(rng.rsplit("-", 1)[1]) + 1 if "-" in rng else 0
        except ValueError:
            return 0
