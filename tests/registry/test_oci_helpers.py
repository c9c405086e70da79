"""Test helpers: Debian's real OCI registry on loopback, and a fault-injecting proxy before it.

`start_registry` runs `/usr/bin/docker-registry serve` (distribution 2.8) on a free 127.0.0.1
port with storage in a temp directory, optionally with htpasswd basic auth. `FaultProxy` stands
between a client and the registry, counts blob GETs and body bytes per digest, and can cut a
blob download after N bytes, flip bytes, slow it down, or hold blob uploads.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from bench.procs import free_port

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
_BLOB_RE = re.compile(r"/v2/.+/blobs/(sha256:[0-9a-f]{64})$")
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate"}


@dataclass
class Registry:
    host: str  # 127.0.0.1:<port>
    process: subprocess.Popen
    root: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (the registry accepts only bcrypt)."""
    import bcrypt  # the test extra's; Debian's htpasswd is not needed

    return f"{user}:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def start_registry(root: Path, users: dict[str, str] | None = None,
                   timeout: float = 30) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if users:
        (root / "htpasswd").write_text(
            "".join(htpasswd_line(u, p) + "\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: corral-test\n    path: {root / 'htpasswd'}\n"
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: corral-test-secret\n"
        + auth
    )
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")],
                            stdout=open(root / "registry.log", "wb"), stderr=subprocess.STDOUT)
    reg = Registry(f"127.0.0.1:{port}", proc, root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("registry exited: " + (root / "registry.log").read_text())
        try:
            if httpx.get(f"{reg.url}/v2/", timeout=1).status_code in (200, 401):
                return reg
        except httpx.HTTPError:
            time.sleep(0.1)
    reg.stop()
    raise RuntimeError("registry did not start: " + (root / "registry.log").read_text())


@dataclass
class Faults:
    cut_after: int | None = None  # bytes of one blob body, then drop the connection (once)
    corrupt: bool = False  # flip the first byte of every blob body
    delay_s: float = 0.0  # per 64 KiB chunk of a blob body
    upload_delay_s: float = 0.0  # before forwarding each blob-upload PATCH
    uploads_seen: int = 0  # PATCHes that reached the proxy (counted before the delay)
    blob_gets: Counter = field(default_factory=Counter)
    blob_bytes: Counter = field(default_factory=Counter)
    requests: list = field(default_factory=list)  # (method, path, status)
    cuts: int = 0


class FaultProxy:
    """An HTTP proxy to `upstream` on its own loopback port; `faults` apply to blob GETs."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.faults = Faults()
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()

    def reset(self, **faults: object) -> Faults:
        self.faults = Faults(**faults)  # type: ignore[arg-type]
        return self.faults

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in _HOP]
        m = _BLOB_RE.match(h.path.split("?", 1)[0])
        digest = m.group(1) if m and h.command == "GET" else None
        faults = self.faults
        if h.command == "PATCH" and "/blobs/uploads/" in h.path:
            with self._lock:
                faults.uploads_seen += 1
            time.sleep(faults.upload_delay_s)
        if digest:
            with self._lock:
                faults.blob_gets[digest] += 1
        req = self._client.build_request(h.command, self.upstream + h.path, headers=headers,
                                         content=body)
        resp = self._client.send(req, stream=True)
        with self._lock:
            faults.requests.append((h.command, h.path, resp.status_code))
        try:
            h.send_response(resp.status_code)
            for k, v in resp.headers.multi_items():
                if k.lower() not in _HOP:
                    h.send_header(k, v)
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            if h.command == "HEAD":
                return
            first = True
            for chunk in resp.iter_raw(65536):
                if digest and resp.status_code in (200, 206):
                    if faults.corrupt and first and chunk:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    first = False
                    if faults.delay_s:
                        time.sleep(faults.delay_s)
                    with self._lock:
                        sent = faults.blob_bytes[digest]
                        cut = (faults.cut_after is not None and faults.cuts == 0
                               and sent + len(chunk) > faults.cut_after)
                        if cut:
                            chunk = chunk[: faults.cut_after - sent]
                            faults.cuts += 1
                        faults.blob_bytes[digest] += len(chunk)
                    h.wfile.write(chunk)
                    if cut:
                        h.wfile.flush()
                        h.connection.shutdown(socket.SHUT_RDWR)
                        return
                else:
                    h.wfile.write(chunk)
        finally:
            resp.close()
