"""A client that stops reading its stream does not slow the engine or the other streams.

What Corral does (by design): the engine finishes the slow request's sequence at its own pace and
frees its KV blocks; the outputs nobody has read wait in that request's queue, which is bounded by
the request's num_predict (an unlimited one stops at 10 x num_ctx tokens, and a server's
max_num_predict caps both), and uvicorn stops writing to the socket once its buffer is full
without blocking the event loop. So the memory a slow reader holds is its own reply, never more.

The test opens a raw socket with a tiny receive buffer and reads nothing while three ordinary
streams run: they must give the same tokens as alone (greedy), and the engine must finish the
slow sequence (KV blocks all free) before a byte past the headers was read; then reading it gives
the whole, complete reply."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.faults.conftest import metric, wait_kv_full

pytestmark = pytest.mark.slow
MODEL = "gemma3:270m"
OPTIONS = {"num_ctx": 512, "temperature": 0}
SLOW_TOKENS = 300
COUNTING = ", ".join(str(i) for i in range(1, 21)) + ","  # goes on counting, past 40 tokens


def stream(url: str, prompt: str) -> tuple[str, int]:
    body = {"model": MODEL, "prompt": prompt, "raw": True, "options": {**OPTIONS, "num_predict": 40}}
    text, last = [], {}
    with httpx.stream("POST", url + "/api/generate", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.strip():
                last = json.loads(line)
                text.append(last.get("response", ""))
    assert last.get("done") is True, last
    return "".join(text), last["eval_count"]


def run_three(url: str) -> list[tuple[str, int]]:
    prompts = [f"Write a story about a {w}:" for w in ("cat", "ship", "forest")]
    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda p: stream(url, p), prompts))


def open_slow_reader(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    s.settimeout(600)
    s.connect((host, int(port)))
    body = json.dumps({"model": MODEL, "prompt": COUNTING, "raw": True,
                       "options": {**OPTIONS, "num_predict": SLOW_TOKENS}}).encode()
    head = (f"POST /api/generate HTTP/1.1\r\nHost: {host}:{port}\r\n"  # the host guard wants it
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    s.sendall(head.encode() + body)
    return s


def read_all(s: socket.socket) -> list[dict]:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head[:300]
    lines = []
    for raw in body.split(b"\n"):  # chunked framing: keep the JSON lines
        raw = raw.strip()
        if raw.startswith(b"{"):
            lines.append(json.loads(raw))
    return lines


def test_a_stream_nobody_reads_does_not_hold_back_the_others(fault_server):
    url = fault_server.url
    alone = run_three(url)
    free0, total = wait_kv_full(url, MODEL)
    slow = open_slow_reader(url)
    try:
        with_slow = run_three(url)
        assert with_slow == alone, f"streams changed beside a slow reader: {alone} vs {with_slow}"
        held = metric(url, "corral_kv_blocks_free", MODEL)
        if held >= total:
            slow.settimeout(60)
            pytest.fail(f"the slow request was not running beside them: {held} of {total} free; "
                        f"its reply ends {read_all(slow)[-2:]}\n{fault_server.log()[-2000:]}")
        free, total = wait_kv_full(url, MODEL, timeout_s=600)
        assert free == total, (f"the slow sequence still holds KV: {free} free of {total}, "
                               f"running {metric(url, 'vllm:num_requests_running', MODEL)}\n"
                               + fault_server.log()[-3000:])
        lines = read_all(slow)  # only now: the engine finished it without the client reading
    finally:
        slow.close()
    assert lines and lines[-1].get("done") is True, lines[-2:]
    tokens = sum(1 for ln in lines if not ln.get("done"))
    assert lines[-1]["eval_count"] > 40 and tokens >= lines[-1]["eval_count"] // 2, (tokens, lines[-1])
    print(f"slow reader: {lines[-1]['eval_count']} tokens, {tokens} lines, read after the engine "
          f"finished; others: {[n for _, n in with_slow]} tokens as alone")
