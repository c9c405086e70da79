"""SIGKILL during a blob upload: nothing partial is visible, the temp file is cleaned at a later
start once stale, and the same upload then succeeds."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import httpx
import pytest

from tests.integration.conftest import start_server, stop_server

pytestmark = pytest.mark.slow
CHUNK = 1 << 20


def test_sigkill_mid_upload_leaves_no_partial_blob(tmp_path):
    data = os.urandom(48 * CHUNK)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    env = {"CORRAL_NO_DEFAULT_MODELS": "1"}
    server = start_server(tmp_path, env)
    sent = threading.Event()

    def body():
        for i in range(0, len(data), CHUNK):
            if i >= 8 * CHUNK:
                sent.set()
                time.sleep(0.2)
            yield data[i:i + CHUNK]

    def upload():
        try:
            httpx.post(f"{server.url}/api/blobs/{digest}", content=body(), timeout=120)
        except httpx.HTTPError:
            pass  # the server died under it

    uploader = threading.Thread(target=upload, daemon=True)
    try:
        uploader.start()
        assert sent.wait(120), server.log()[-3000:]
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
        uploader.join(60)
        blobs = server.models_dir / "blobs"
        names = os.listdir(blobs)
        assert f"sha256-{digest[7:]}" not in names, names
        temps = [n for n in names if n.startswith(".tmp-")]
        assert temps, f"expected the killed upload's temp file, found {names}"
        old = time.time() - 2 * 3600
        for name in temps:
            os.utime(blobs / name, (old, old))
    finally:
        if server.process.poll() is None:
            stop_server(server)
    server = start_server(tmp_path, env)
    try:
        assert not [n for n in os.listdir(blobs) if n.startswith(".tmp-")], "stale temp kept"
        assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404
        r = httpx.post(f"{server.url}/api/blobs/{digest}", content=data, timeout=120)
        assert r.status_code == 201, r.text
        assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200
        assert (blobs / f"sha256-{digest[7:]}").read_bytes() == data
    finally:
        stop_server(server)
