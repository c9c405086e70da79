"""SIGTERM drains a live server (issue 9): readiness off at once, new work refused with 503,
running streams finish (or, past CORRAL_DRAIN_TIMEOUT, end with an error line), exit code 0.

The drain timeline (signal -> /ready 503 -> last stream done -> exit) is printed for the report.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.integration.conftest import start_server, stop_server
from tests.integration.ops_helpers import GEMMA, Stream, counting, wait_first_lines

pytestmark = pytest.mark.slow

SHUTTING_DOWN = "server is shutting down; retry on another instance"


def test_sigterm_lets_eight_streams_finish_and_exits_0(tmp_path, corral_cache):
    server = start_server(tmp_path, {"CORRAL_CACHE": str(corral_cache), "CORRAL_PRELOAD": GEMMA,
                                     "CORRAL_DRAIN_TIMEOUT": "600"})
    try:
        # long enough that the streams are still running while the refusals are checked
        streams = [Stream(server.url + "/api/generate", counting(24 + i)).start() for i in range(8)]
        wait_first_lines(streams)
        signalled = time.monotonic()
        server.process.terminate()
        ready = httpx.get(server.url + "/ready", timeout=30)
        ready_at = time.monotonic()
        assert ready.status_code == 503 and ready.json()["status"] == "draining", ready.text
        refused = httpx.post(server.url + "/api/generate", json=counting(3), timeout=30)
        assert refused.status_code == 503 and refused.json() == {"error": SHUTTING_DOWN}
        assert refused.headers.get("connection") == "close"
        refused = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
            "model": GEMMA, "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["message"] == SHUTTING_DOWN, refused.text
        running = sum(s.done_at is None for s in streams)
        assert running > 0, "every stream had ended before the refusals were checked"
        assert httpx.get(server.url + "/api/tags", timeout=30).status_code == 200  # reads go on
        for s in streams:
            s.join(600)
        rc = server.process.wait(120)
        exited = time.monotonic()
        log = server.log()
        for s in streams:
            assert s.status == 200 and s.error is None, (s.status, s.error, log[-3000:])
            assert s.last.get("done") is True, (s.lines[-2:], log[-3000:])
            assert not any("error" in line for line in s.lines), s.lines
            assert s.last["eval_count"] == s.body["options"]["num_predict"] or \
                s.last["done_reason"] == "stop", s.last
        assert rc == 0, log[-4000:]
        last_done = max(s.done_at for s in streams)
        timeline = {"ready 503": ready_at - signalled, "last stream done": last_done - signalled,
                    "exit": exited - signalled, "streams running at the refusals": running}
        print("\ndrain timeline (s after SIGTERM):", json.dumps(timeline))
        assert ready_at <= last_done <= exited
    finally:
        stop_server(server)


def test_drain_timeout_ends_streams_with_an_error_line(tmp_path, corral_cache):
    server = start_server(tmp_path, {"CORRAL_CACHE": str(corral_cache), "CORRAL_PRELOAD": GEMMA,
                                     "CORRAL_DRAIN_TIMEOUT": "3"})
    try:
        native = Stream(server.url + "/api/generate", counting(100_000)).start()
        wait_first_lines([native])
        # Greedy, so it is still running at the timeout: sampled, a reply may end first (it
        # ended within 3 s once the packed weights' numerics changed), leaving no error frame.
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=300, json={
                "model": GEMMA, "messages": [{"role": "user", "content": "Count to a million."}],
                "max_tokens": 100_000, "temperature": 0, "stream": True}) as sse:
            frames = sse.iter_lines()
            assert next(line for line in frames if line.startswith("data: "))
            signalled = time.monotonic()
            server.process.terminate()
            rest = [line for line in frames if line.startswith("data: ")]
        native.join(120)
        rc = server.process.wait(120)
        log = server.log()
        assert "drain timeout" in native.last.get("error", ""), (native.lines[-2:], log[-3000:])
        errors = [json.loads(line[6:]) for line in rest if line.startswith("data: {")]
        assert "drain timeout" in errors[-1]["error"]["message"], (rest[-2:], log[-3000:])
        assert rc == 0, log[-4000:]
        print(f"\ndrain timeout 3 s: exit {time.monotonic() - signalled:.2f} s after SIGTERM")
    finally:
        stop_server(server)


def test_a_second_signal_exits_at_once(tmp_path):
    """An upload stalled mid-body holds the drain; the second SIGTERM ends it with 128+15."""
    import socket
    from urllib.parse import urlsplit

    server = start_server(tmp_path, {"CORRAL_NO_DEFAULT_MODELS": "1", "CORRAL_DRAIN_TIMEOUT": "600"})
    try:
        parts = urlsplit(server.url)
        upload = socket.create_connection((parts.hostname, parts.port), timeout=30)
        upload.sendall(b"POST /api/blobs/sha256:" + b"0" * 64 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Length: 1000000\r\n\r\n" + b"x" * 1000)
        time.sleep(1.0)  # the request is in flight, waiting for the rest of its body
        server.process.terminate()
        assert httpx.get(server.url + "/ready", timeout=30).json()["status"] == "draining"
        time.sleep(2.0)
        assert server.process.poll() is None, "the drain did not wait for the upload"
        signalled = time.monotonic()
        server.process.terminate()
        rc = server.process.wait(60)
        assert rc == 128 + 15, (rc, server.log()[-3000:])
        print(f"\nsecond SIGTERM: exit {rc} {time.monotonic() - signalled:.2f} s later")
        upload.close()
    finally:
        stop_server(server)
