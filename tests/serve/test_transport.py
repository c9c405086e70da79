"""The HTTP protocol on a real socket (uvicorn in a thread, no model): head timeout against
idle and slowloris connections, 431 for a huge head, and TLS with the `ollama` and `openai`
clients against a self-signed certificate."""

from __future__ import annotations

import hashlib
import select
import socket
import ssl
import threading
import time

import httpx
import ollama
import openai
import pytest
import uvicorn

from bench.procs import free_port
from registry.store import Store
from serve.app import build_app
from serve.services import Services
from serve.settings import Settings
from serve.transport import protocol
from tests.certs import self_signed

HEAD_TIMEOUT = 1.0
WAIT = 60.0  # generous: how long a test waits for what should take about HEAD_TIMEOUT


class ThreadServer:
    def __init__(self, app, **config):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning",
            http=protocol(HEAD_TIMEOUT), h11_max_incomplete_event_size=8192, **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(WAIT)


def app_for(tmp_path, **settings):
    store = Store(tmp_path / "models")
    s = Settings(models_dir=store.root, cache_dir=tmp_path / "cache", default_models=False,
                 **settings)
    return build_app(s, Services(settings=s, store=store))


@pytest.fixture
def server(tmp_path):
    with ThreadServer(app_for(tmp_path)) as srv:
        yield srv


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return sock


def read_until_closed(sock) -> bytes:
    """Everything the server sends until it closes (socket.timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_ordinary_requests_pass(server):
    r = httpx.get(f"http://127.0.0.1:{server.port}/")
    assert (r.status_code, r.text) == (200, "Ollama is running")


def test_idle_connection_is_closed(server):
    with connect(server.port) as sock:
        assert read_until_closed(sock) == b""  # closed without a word: it never spoke


def test_partial_head_gets_408_and_close(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply


def test_slowloris_dribble_is_cut_off(server):
    """A byte at a time keeps the socket busy but never completes the head: the timer runs from
    the head's first byte, so the server closes it anyway."""
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: a\r\n" * 10_000
    sent = 0
    deadline = time.monotonic() + WAIT
    with connect(server.port) as sock:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                break
            try:
                sock.send(head[sent:sent + 1])
            except OSError:
                break
            sent += 1
        else:
            pytest.fail(f"still open after {WAIT} s and {sent} bytes")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408")
    assert sent < len(head)


def test_kept_alive_connection_times_its_next_head(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b"Ollama is running" not in first:
            first += sock.recv(65536)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408")


def test_huge_head_is_431(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    r = httpx.get(f"http://127.0.0.1:{server.port}/", headers={"X-Ok": "a" * 4000})
    assert r.status_code == 200  # a big but allowed head


def test_tls_with_ollama_and_openai_clients(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path / "tls")
    token = "k-tls-infer"
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{id: tls, role: infer, sha256: {hashlib.sha256(token.encode()).hexdigest()}}}\n")
    app = app_for(tmp_path, api_keys_file=keys)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    trusted = ssl.create_default_context(cafile=str(cert))
    # Clients are closed before the server stops: a TLS close waits for the peer's reply.
    with ThreadServer(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as srv:
        url = f"https://127.0.0.1:{srv.port}"
        with ollama.Client(host=url, verify=trusted,
                           headers={"Authorization": f"Bearer {token}"}) as client:
            assert client.list().models == []
            with pytest.raises(ollama.ResponseError) as err:
                client.pull("x")  # an infer key: denied, over TLS
            assert err.value.status_code == 403
        with httpx.Client(verify=trusted) as http:
            oai = openai.OpenAI(base_url=url + "/v1", api_key=token, http_client=http)
            assert list(oai.models.list()) == []
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=url + "/v1", api_key="wrong", http_client=http,
                              max_retries=0).models.list()
        with pytest.raises(httpx.ConnectError):  # the certificate is not in the default store
            httpx.get(url + "/")
