"""An exception inside a forward step, and a load at 4x the KV capacity, on the real model.

The KV pool holds 4 x num_ctx tokens (num_parallel unset), so 16 concurrent requests of about
num_ctx tokens each (two 16-token blocks of 32) are 4x what fits: the scheduler queues and preempts by recompute, and each
request must still give exactly the text it gives alone (greedy).

The server keeps float weights here: exact equality needs numerics that do not depend on the
batch, and the packed kernels are chosen per batch size (backends/quant/kernels.py: one kernel
up to 8 rows, another above), so a near-tie between two tokens can break the other way in a
batch. What this file tests, the KV cache under recompute preemption, is the same for both.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.faults.conftest import metric, wait_kv_full

pytestmark = pytest.mark.slow

SERVER_ENV = {"CORRAL_GGUF_WEIGHTS": "float"}  # read by the fault_server fixture
MODEL = "gemma3:270m"
OPTIONS = {"num_ctx": 32, "temperature": 0}
NUM_PREDICT = 18  # with the ~10-token prompts, under num_ctx: no context shift


def complete(url: str, prompt: str, num_predict: int = NUM_PREDICT) -> str:
    r = httpx.post(url + "/api/generate", timeout=600, json={
        "model": MODEL, "prompt": prompt, "raw": True, "stream": False,
        "options": {**OPTIONS, "num_predict": num_predict}})
    assert r.status_code == 200, r.text
    return r.json()["response"]


def stream_lines(url: str, prompt: str, first: threading.Event, out: list) -> None:
    body = {"model": MODEL, "prompt": prompt, "raw": True,
            "options": {**OPTIONS, "num_predict": 40}}
    with httpx.stream("POST", url + "/api/generate", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.strip():
                out.append(json.loads(line))
                first.set()


def test_step_exception_ends_that_steps_requests_and_the_engine_recovers(fault_server):
    url = fault_server.url
    reference = complete(url, "The capital of France is", num_predict=12)
    outs: list[list] = [[] for _ in range(3)]
    firsts = [threading.Event() for _ in outs]
    threads = [threading.Thread(target=stream_lines, args=(url, f"Story {i}: once upon", e, o))
               for i, (e, o) in enumerate(zip(firsts, outs))]
    for t in threads:
        t.start()
    for e in firsts:
        assert e.wait(300), "a stream never started"
    r = httpx.post(url + "/api/debug/faults", json={"kind": "raise", "model": MODEL, "count": 1})
    assert r.status_code == 200, r.text
    for t in threads:
        t.join(300)
    for out in outs:
        assert "error" in out[-1] and "injected fault" in out[-1]["error"], out[-3:]
    free, total = wait_kv_full(url, MODEL)
    assert free == total, f"KV blocks after the fault: {free} free of {total}"
    assert complete(url, "The capital of France is", num_predict=12) == reference


def test_four_times_the_kv_capacity_gives_each_requests_own_text(fault_server):
    url = fault_server.url
    prompts = [f"List {i} fruits, comma separated:" for i in range(16)]
    alone = [complete(url, p) for p in prompts]
    preempted = metric(url, "vllm:num_preemptions_total", MODEL)
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: complete(url, p), prompts))
    mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(alone, together)) if a != b]
    assert not mismatched, f"batched text differs from alone: {mismatched[:3]}"
    assert metric(url, "vllm:num_preemptions_total", MODEL) > preempted, "the load never preempted"
    free, total = wait_kv_full(url, MODEL)
    assert free == total
