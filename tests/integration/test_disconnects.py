"""Disconnects of every kind free the engine sequence at once (issue 15, item 6).

A client killed with kill -9 (mid-stream, mid non-streamed reply, before its first token), a
proxy that resets the connection, and an SDK's close(): each must leave `running` at 0 well
before the generation could have ended by itself. The requests ask for 20000 tokens with the
context shifted as needed, which takes many minutes on a CPU, so a sequence that kept decoding
would still be running when the (generous) deadline below passes.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import anthropic
import httpx
import ollama
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "gemma3:270m"
LONG = {"temperature": 0, "num_predict": 20000}
PROMPT = "Count from 1 to 100000, separated by commas: 1, 2, 3,"
FREED_WITHIN_S = 60.0  # a freed sequence shows within a step; this is margin for a loaded CI


def _metrics(url: str) -> dict[str, float]:
    """Summed samples by metric name (either this build's or the vLLM names of /metrics)."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _running(url: str) -> float:
    m = _metrics(url)
    return m.get("vllm:num_requests_running", m.get("corral_sequences_running", 0.0))


def _wait_running(server, want: int, timeout: float = FREED_WITHIN_S) -> float:
    """Seconds until `running` == want; fails with the metrics and the server log's tail."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        m = _metrics(server.url)
        running = m.get("vllm:num_requests_running", m.get("corral_sequences_running", 0.0))
        if running == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"running != {want} after {timeout:.0f} s: {m}\n{server.log()[-3000:]}")


def _assert_all_free(server) -> None:
    _wait_running(server, 0)
    deadline = time.monotonic() + FREED_WITHIN_S
    while time.monotonic() < deadline:
        m = _metrics(server.url)
        if (m.get("corral_model_requests_in_flight", 0) == 0
                and m.get("corral_kv_blocks_free") == m.get("corral_kv_blocks_total")):
            return
        time.sleep(0.1)
    raise AssertionError(f"leases or KV blocks not returned: {m}")


@pytest.fixture(autouse=True)
def idle(live_server):
    """Each case starts from no running sequence (one left by an earlier test would be
    counted here), waiting for it rather than failing on another test's tail."""
    _wait_running(live_server, 0)


# -- a client process killed with SIGKILL ----------------------------------------------------

_CLIENT = r"""
import json, sys, httpx
url, path, body = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with httpx.Client(timeout=None) as c:
    if body.get("stream") is False:
        print("sent", flush=True)
        c.post(url + path, json=body)
    else:
        with c.stream("POST", url + path, json=body) as r:
            for line in r.iter_lines():
                print(line, flush=True)
"""


def _client_process(url: str, path: str, body: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CLIENT, url, path, json.dumps(body)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("path,body", [
    ("/api/generate", {"model": MODEL, "prompt": PROMPT, "options": LONG}),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                   "options": LONG}),
    ("/v1/chat/completions", {"model": MODEL, "stream": True, "max_tokens": 20000,
                              "temperature": 0,
                              "messages": [{"role": "user", "content": PROMPT}]}),
])
def test_client_killed_mid_stream(live_server, path, body):
    proc = _client_process(live_server.url, path, body)
    try:
        for _ in range(3):  # tokens are flowing
            assert proc.stdout.readline(), proc.stderr.read()
        assert _running(live_server.url) == 1
    finally:
        _kill(proc)
    print(f"{path}: running 0 after {_wait_running(live_server, 0):.2f} s")
    _assert_all_free(live_server)


@pytest.mark.parametrize("path,body", [
    ("/api/generate", {"model": MODEL, "prompt": PROMPT, "stream": False, "options": LONG}),
    ("/v1/chat/completions", {"model": MODEL, "stream": False, "max_tokens": 20000,
                              "temperature": 0,
                              "messages": [{"role": "user", "content": PROMPT}]}),
    ("/v1/messages", {"model": MODEL, "stream": False, "max_tokens": 20000,
                      "messages": [{"role": "user", "content": PROMPT}]}),
])
def test_client_killed_mid_non_streamed_request(live_server, path, body):
    proc = _client_process(live_server.url, path, body)
    try:
        assert proc.stdout.readline() == "sent\n", proc.stderr.read()
        _wait_running(live_server, 1)  # decoding, nothing sent back yet
    finally:
        _kill(proc)
    print(f"{path}: running 0 after {_wait_running(live_server, 0):.2f} s")
    _assert_all_free(live_server)


def test_streams_open_match_running(live_server):
    """Three streams open show 3 running; each one killed takes exactly one away."""
    body = {"model": MODEL, "prompt": PROMPT, "options": LONG}
    procs = [_client_process(live_server.url, "/api/generate", body) for _ in range(3)]
    try:
        for proc in procs:
            assert proc.stdout.readline(), proc.stderr.read()
        _wait_running(live_server, 3)
        for left, proc in zip((2, 1, 0), procs):
            _kill(proc)
            _wait_running(live_server, left)
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill(proc)
    _assert_all_free(live_server)


# -- a proxy that resets both connections ----------------------------------------------------

class ResettingProxy:
    """A loopback TCP proxy for one connection; reset() closes both sides with an RST."""

    def __init__(self, upstream_port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.upstream_port = upstream_port
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.sockets = [client, server]
        threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def reset(self) -> None:
        for sock in self.sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.shutdown(socket.SHUT_RD)  # wakes the pump blocked in recv, so close() is real
            sock.close()
        self.listener.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_proxy_reset_mid_stream(live_server):
    proxy = ResettingProxy(_port(live_server.url))
    client = httpx.Client(timeout=120)
    body = {"model": MODEL, "prompt": PROMPT, "options": LONG}
    with pytest.raises(httpx.HTTPError):
        with client.stream("POST", proxy.url + "/api/generate", json=body) as r:
            for n, _ in enumerate(r.iter_lines()):
                if n == 2:
                    assert _running(live_server.url) == 1
                    proxy.reset()
    client.close()
    print(f"running 0 after {_wait_running(live_server, 0):.2f} s")
    _assert_all_free(live_server)


def test_proxy_reset_before_the_reply(live_server):
    proxy = ResettingProxy(_port(live_server.url))
    body = {"model": MODEL, "stream": False, "max_tokens": 20000, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPT}]}
    errors: list[BaseException] = []

    def post() -> None:
        try:
            httpx.post(proxy.url + "/v1/chat/completions", json=body, timeout=600)
        except BaseException as err:  # noqa: BLE001 - the reset is the expected outcome
            errors.append(err)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    _wait_running(live_server, 1)
    proxy.reset()
    thread.join(timeout=60)
    assert errors and isinstance(errors[0], httpx.HTTPError), errors
    print(f"running 0 after {_wait_running(live_server, 0):.2f} s")
    _assert_all_free(live_server)


# -- an SDK's close() ------------------------------------------------------------------------

def test_sdk_close_frees_the_sequence(live_server):
    oai = openai.OpenAI(base_url=live_server.url + "/v1", api_key="corral", max_retries=0)
    stream = oai.chat.completions.create(model=MODEL, stream=True, max_tokens=20000,
                                         temperature=0,
                                         messages=[{"role": "user", "content": PROMPT}])
    for n, _ in enumerate(stream):
        if n == 3:
            break
    assert _running(live_server.url) == 1
    stream.close()
    _wait_running(live_server, 0)

    claude = anthropic.Anthropic(base_url=live_server.url, api_key="corral", max_retries=0)
    with claude.messages.stream(model=MODEL, max_tokens=20000,
                                messages=[{"role": "user", "content": PROMPT}]) as events:
        for n, _ in enumerate(events.text_stream):
            if n == 3:
                break
        assert _running(live_server.url) == 1
    _wait_running(live_server, 0)

    native = ollama.Client(host=live_server.url)
    chunks = native.generate(model=MODEL, prompt=PROMPT, options=LONG, stream=True)
    for n, _ in enumerate(chunks):
        if n == 3:
            break
    assert _running(live_server.url) == 1
    chunks.close()  # the generator's close closes its httpx stream
    native._client.close()
    _wait_running(live_server, 0)
    _assert_all_free(live_server)
