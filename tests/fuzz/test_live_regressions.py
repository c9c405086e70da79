"""What the first fuzzing run found, checked on a live server with the real model."""

from __future__ import annotations

import threading

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow

MODEL = "gemma3:270m"


def generate(url: str, **fields) -> httpx.Response:
    body = {"model": MODEL, "prompt": "Say hi.", "stream": False,
            "options": {"num_predict": 2, "temperature": 0}, **fields}
    return httpx.post(url + "/api/generate", json=body, timeout=300)


def test_thread_count_stays_flat_whatever_num_thread_says(fuzz_server):
    proc = psutil.Process(fuzz_server.process.pid)
    assert generate(fuzz_server.url).status_code == 200  # loaded, pools built
    before = proc.num_threads()
    seen = []
    for value in (1, 2, 3, 7, 64, 1000, 10**6, 10**9, 1):
        r = generate(fuzz_server.url, options={"num_predict": 2, "num_thread": value})
        assert r.status_code == 200, r.text
        seen.append(proc.num_threads())
    # each new value used to reach torch.set_num_threads and leave an OpenMP pool behind
    assert max(seen) <= before + 8, f"threads before {before}, after each value {seen}"
    r = generate(fuzz_server.url, options={"num_thread": "many"})
    assert (r.status_code, r.json()) == (400, {"error": 'option "num_thread" must be of type integer'})


def test_bad_context_is_400_and_spares_the_batch(fuzz_server):
    results: dict[str, httpx.Response] = {}

    def neighbour() -> None:
        results["ok"] = generate(fuzz_server.url, options={"num_predict": 12, "temperature": 0})

    thread = threading.Thread(target=neighbour)
    thread.start()
    for bad in ([10**9], [-1], [1, 2, 262144 * 4]):
        r = generate(fuzz_server.url, context=bad)
        assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"], r.text
    thread.join(300)
    assert results["ok"].status_code == 200 and results["ok"].json()["done"] is True


@pytest.mark.parametrize("body, status", [
    ({"keep_alive": ""}, 400),
    ({"options": {"top_p": "high"}}, 400),
    ({"options": {"temperature": 1e39}}, 400),
    ({"options": {"seed": 2**64}}, 400),
])
def test_hostile_fields_on_a_real_model(fuzz_server, body, status):
    r = generate(fuzz_server.url, **body)
    assert r.status_code == status, r.text
