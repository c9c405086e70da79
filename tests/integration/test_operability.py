"""Operability on a live server (issue 9): probes, preload, metrics, the access log, engine
faults seen by /health, and a pull cut by SIGTERM that resumes after a restart.

One module server starts with a preload of gemma3:270m (keep_alive forever) and a preload that
must fail; its /ready answers are recorded from the moment the socket listens. The fault tests
run last: a crashed engine is replaced only by the next request for its model.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import spawn_server, start_server, stop_server
from tests.integration.ops_helpers import (GEMMA, Stream, counting, metric_samples, metric_types,
                                           total, wait_for)
from tests.registry.test_oci_helpers import FaultProxy, start_registry

pytestmark = pytest.mark.slow

STALL_TIMEOUT = 10


@pytest.fixture(scope="module")
def ops(tmp_path_factory, corral_cache):
    server = spawn_server(tmp_path_factory.mktemp("ops"), {
        "CORRAL_CACHE": str(corral_cache),
        "CORRAL_PRELOAD": f"{GEMMA}=-1,all-minilm=banana",
        "CORRAL_DEBUG_FAULTS": "1",
        "CORRAL_LOG_FORMAT": "json",
        "CORRAL_STALL_TIMEOUT": str(STALL_TIMEOUT),
    })
    try:
        answers = _watch_start(server)
    except BaseException:
        stop_server(server)
        raise
    yield server, answers
    stop_server(server)


def _watch_start(server, timeout: float = 300) -> list[tuple[int, dict]]:
    """Every /ready answer from the first one (the socket listens) until the first 200."""
    answers: list[tuple[int, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"server exited: {server.log()[-4000:]}"
        try:
            resp = httpx.get(server.url + "/ready", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        answers.append((resp.status_code, resp.json()))
        if resp.status_code == 200:
            return answers
        time.sleep(0.1)
    raise AssertionError(f"not ready within {timeout} s: {answers[-1:]}\n{server.log()[-4000:]}")


def test_ready_waits_for_the_preload_and_lists_what_failed(ops):
    server, answers = ops
    status, first = answers[0]
    assert status == 503 and first["status"] == "starting", answers[:3]
    assert f"preload {GEMMA}" in first["pending"], first
    assert [s for s, _ in answers[:-1]] == [503] * (len(answers) - 1)
    status, last = answers[-1]
    assert status == 200 and last["status"] == "ready", last
    assert list(last["failed"]) == ["preload all-minilm"], last
    assert "banana" in last["failed"]["preload all-minilm"], last
    # the preloaded model is resident with its keep_alive (forever: a far-future expiry)
    models = httpx.get(server.url + "/api/ps", timeout=10).json()["models"]
    assert [m["name"] for m in models] == [GEMMA], models
    assert int(models[0]["expires_at"][:4]) > 2200, models
    assert httpx.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(server.url + "/", timeout=10).text == "Ollama is running"


def _native(url: str, path: str, body: dict) -> tuple[int, int]:
    """(prompt tokens, generated tokens) of one native request, streamed or not."""
    if body.get("stream") is False:
        reply = httpx.post(url + path, json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        final = reply.json()
    else:
        with httpx.stream("POST", url + path, json=body, timeout=300) as resp:
            assert resp.status_code == 200
            lines = [json.loads(line) for line in resp.iter_lines() if line.strip()]
        final = lines[-1]
    assert final.get("done") is True, final
    return final["prompt_eval_count"], final["eval_count"]


def _openai(url: str, path: str, body: dict) -> tuple[int, int]:
    if not body.get("stream"):
        reply = httpx.post(url + path, json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        usage = reply.json()["usage"]
    else:
        with httpx.stream("POST", url + path, json=body, timeout=300) as resp:
            assert resp.status_code == 200
            frames = [json.loads(line[6:]) for line in resp.iter_lines()
                      if line.startswith("data: {")]
        usage = next(f["usage"] for f in frames if f.get("usage"))
    return usage["prompt_tokens"], usage["completion_tokens"]


VLLM_COUNTERS = ["vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success",
                 "vllm:num_preemptions", "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"]
VLLM_HISTOGRAMS = ["vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                   "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
                   "vllm:request_prompt_tokens", "vllm:request_generation_tokens"]
VLLM_GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting",
               "vllm:kv_cache_usage_perc", "vllm:cache_config_info"]


def test_metrics_count_what_was_served(ops):
    server, _ = ops
    url = server.url
    chat = {"model": GEMMA, "messages": [{"role": "user", "content": "Say hi"}]}
    jobs = (
        [(_native, "/api/generate", {**counting(6 + i)}) for i in range(3)]
        + [(_native, "/api/generate", {**counting(5), "stream": False}) for _ in range(2)]
        + [(_native, "/api/chat", {**chat, "stream": False, "options": {"num_predict": 5}})] * 2
        + [(_openai, "/v1/chat/completions", {**chat, "max_tokens": 5})] * 2
        + [(_openai, "/v1/chat/completions", {**chat, "max_tokens": 5, "stream": True,
                                              "stream_options": {"include_usage": True}})]
        + [(_openai, "/v1/completions", {"model": GEMMA, "prompt": "1, 2, 3,",
                                         "max_tokens": 4, "temperature": 0})] * 2
    )
    before = metric_samples(url)
    with ThreadPoolExecutor(6) as pool:
        served = list(pool.map(lambda job: job[0](url, job[1], job[2]), jobs))
        embed = pool.submit(httpx.post, url + "/api/embed",
                            json={"model": "all-minilm", "input": "hello"}, timeout=300)
        assert embed.result().status_code == 200
    n = len(jobs)

    def settled():
        now = metric_samples(url)
        idle = total(now, "vllm:num_requests_running") == 0 and total(
            now, "vllm:num_requests_waiting") == 0 and total(now, "vllm:kv_cache_usage_perc") == 0
        return now if idle else None

    after = wait_for(settled, 60, "running, waiting and KV usage back to 0")

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    evidence = f"served (prompt, generated) per request: {served}"
    assert delta("vllm:request_success_total", model_name=GEMMA) == n, evidence
    assert delta("vllm:request_success_total", finished_reason="length") + delta(
        "vllm:request_success_total", finished_reason="stop") == n, evidence
    assert delta("vllm:prompt_tokens_total") == sum(p for p, _ in served), evidence
    assert delta("vllm:generation_tokens_total") == sum(g for _, g in served), evidence
    assert delta("vllm:prefix_cache_queries_total") >= delta("vllm:prefix_cache_hits_total")
    for name in VLLM_HISTOGRAMS:
        if name != "vllm:inter_token_latency_seconds":
            assert delta(name + "_count") == n, (name, evidence)
    # one gap between each two tokens of a request
    assert delta("vllm:inter_token_latency_seconds_count") == sum(g - 1 for _, g in served)
    assert delta("vllm:request_generation_tokens_sum") == sum(g for _, g in served)
    assert delta("corral_http_requests_total", route="/api/generate", status="200") == 5
    assert delta("corral_http_requests_total", route="/v1/chat/completions", status="200") == 3
    assert delta("corral_http_requests_total", route="/api/embed", status="200") == 1
    assert total(after, "corral_kv_blocks_free") == total(after, "corral_kv_blocks_total") > 0
    assert total(after, "vllm:cache_config_info", block_size="16") == 1

    types = metric_types(url)
    for name in VLLM_COUNTERS + ["corral_model_loads", "corral_http_requests"]:
        assert types.get(name) == "counter", (name, types.get(name))
    for name in VLLM_HISTOGRAMS + ["corral_model_load_duration_seconds"]:
        assert types.get(name) == "histogram", (name, types.get(name))
    for name in VLLM_GAUGES + ["corral_models_loaded", "corral_device_memory_used_bytes",
                               "corral_device_memory_total_bytes", "corral_kv_blocks_free"]:
        assert types.get(name) == "gauge", (name, types.get(name))
    assert total(after, "corral_model_loads_total", model_name=GEMMA) == 1
    resident = httpx.get(url + "/api/ps", timeout=30).json()["models"]  # gemma, all-minilm
    assert total(after, "corral_models_loaded", device="cpu") == len(resident) == 2, resident


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_access_log_has_one_line_per_request_with_its_id(ops):
    server, _ = ops
    tag = uuid.uuid4().hex[:8]
    ids = {f"ops-{tag}-{i}": path for i, path in enumerate(["/api/tags", "/api/generate",
                                                             "/v1/chat/completions", "/nowhere"])}
    replies = {}
    for rid, path in ids.items():
        headers = {"X-Request-ID": rid}
        if path == "/api/generate":
            replies[rid] = httpx.post(server.url + path, headers=headers, timeout=300,
                                      json={**counting(4), "stream": False})
        elif path == "/v1/chat/completions":
            replies[rid] = httpx.post(server.url + path, headers=headers, timeout=300, json={
                "model": GEMMA, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3, "stream": True})
        else:
            replies[rid] = httpx.get(server.url + path, headers=headers, timeout=30)
        assert replies[rid].headers["x-request-id"] == rid
    made = httpx.get(server.url + "/api/version", timeout=30).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made), made

    wanted = [*ids, made]

    def lines_by_id():
        access = [e for e in _json_lines(server.log()) if e.get("logger") == "corral.access"]
        found = {rid: [e for e in access if e.get("request_id") == rid] for rid in wanted}
        return found if all(found.values()) else None

    found = wait_for(lines_by_id, 30, "an access line for every request ID")
    assert {rid: len(lines) for rid, lines in found.items()} == {rid: 1 for rid in wanted}, found
    gen = found[f"ops-{tag}-1"][0]
    assert gen["method"] == "POST" and gen["route"] == "/api/generate" and gen["status"] == 200
    assert gen["model"] == GEMMA and gen["tokens_in"] > 0 and gen["tokens_out"] == 4, gen
    assert 0 < gen["ttft_s"] <= gen["duration_s"], gen
    assert gen["client"].startswith("127.0.0.1:"), gen
    chat = found[f"ops-{tag}-2"][0]
    assert chat["model"] == GEMMA and 1 <= chat["tokens_out"] <= 3, chat  # may end early
    assert found[f"ops-{tag}-3"][0]["status"] == 404
    assert found[f"ops-{tag}-3"][0]["route"] == "unmatched"
    assert found[made][0]["route"] == "/api/version"


def test_pull_cut_by_sigterm_resumes_after_restart(ops, tmp_path_factory):
    """...through CORRAL_PULL at the next start, which then runs CORRAL_CREATE on the result."""
    server, _ = ops
    registry = start_registry(tmp_path_factory.mktemp("ops-registry"))
    proxy = FaultProxy(registry.url)
    target = f"{registry.host}/library/ops-minilm:latest"
    pulled = f"{proxy.host}/library/ops-minilm:latest"
    cut = resumed = None
    try:
        assert httpx.post(server.url + "/api/copy", timeout=60, json={
            "source": "all-minilm", "destination": target}).status_code == 200
        push = httpx.post(server.url + "/api/push", timeout=600,
                          json={"model": target, "insecure": True, "stream": False})
        assert push.status_code == 200 and push.json().get("status") == "success", push.text
        httpx.request("DELETE", server.url + "/api/delete", json={"model": target}, timeout=60)
        manifest = httpx.get(f"{registry.url}/v2/library/ops-minilm/manifests/latest", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=30).json()
        layer = max(manifest["layers"], key=lambda x: x["size"])
        digest, size = layer["digest"], layer["size"]

        faults = proxy.reset(delay_s=0.05)  # ~1.3 MB/s: the pull is mid-blob at the signal
        cut = start_server(tmp_path_factory.mktemp("ops-cut"), {
            "CORRAL_NO_DEFAULT_MODELS": "1", "CORRAL_DRAIN_TIMEOUT": "2"})
        stream = Stream(cut.url + "/api/pull", {"model": pulled, "insecure": True}).start()
        # the part's progress is saved every second: let a few saves happen
        wait_for(lambda: faults.blob_bytes[digest] > 4_000_000, 180, "4 MB of the blob")
        time.sleep(1.5)
        cut.process.terminate()
        rc = cut.process.wait(90)
        assert rc == 0, cut.log()[-4000:]
        stream.join(30)
        served_first = faults.blob_bytes[digest]
        assert served_first < size, "the pull finished before the signal"
        assert not any(line.get("status") == "success" for line in stream.lines), stream.lines[-3:]
        blobs = cut.models_dir / "blobs"
        partial = blobs / (digest.replace(":", "-") + "-partial")
        assert partial.exists(), sorted(p.name for p in blobs.iterdir())
        assert not (blobs / digest.replace(":", "-")).exists()

        faults = proxy.reset()
        home = tmp_path_factory.mktemp("ops-resume")
        (home / "Modelfile").write_text(f"FROM {pulled}\nPARAMETER num_ctx 256\n")
        resumed = start_server(home, {
            "OLLAMA_MODELS": str(cut.models_dir), "CORRAL_NO_DEFAULT_MODELS": "1",
            "CORRAL_PULL": pulled, "CORRAL_INSECURE_REGISTRIES": proxy.host,
            "CORRAL_CREATE": f"ops-made={home / 'Modelfile'}"})
        ready = httpx.get(resumed.url + "/ready", timeout=30).json()
        assert ready == {"status": "ready", "failed": {}}, (ready, resumed.log()[-4000:])
        names = [m["name"] for m in httpx.get(resumed.url + "/api/tags", timeout=30).json()["models"]]
        assert pulled in names and "ops-made:latest" in names, names
        assert "resuming" in resumed.log(), resumed.log()[-4000:]
        assert 0 < faults.blob_bytes[digest] <= size - 1_000_000, (
            f"re-served {faults.blob_bytes[digest]} of {size} bytes after {served_first} before")
        assert not partial.exists()
    finally:
        for s in (cut, resumed):
            if s is not None:
                stop_server(s)
        proxy.close()
        registry.stop()


def _arm(url: str, **fault) -> None:
    reply = httpx.post(url + "/api/debug/faults", json=fault, timeout=30)
    assert reply.status_code == 200, reply.text


def test_health_reports_a_stalled_step(ops):
    server, _ = ops
    _arm(server.url, kind="stall", model=GEMMA, seconds=STALL_TIMEOUT * 2.5)
    stream = Stream(server.url + "/api/generate", {**counting(3), "stream": False}).start()
    try:
        def stuck():
            reply = httpx.get(server.url + "/health", timeout=30)
            return reply if reply.status_code == 503 else None

        reply = wait_for(stuck, STALL_TIMEOUT * 2.5 + 60, "/health 503 during the stall")
        assert "stuck" in reply.json()["error"] and GEMMA in reply.json()["error"], reply.text
        assert httpx.get(server.url + "/ready", timeout=30).status_code == 200
    finally:
        stream.join(300)
    assert stream.status == 200 and stream.last.get("done") is True, (stream.lines, stream.error)
    wait_for(lambda: httpx.get(server.url + "/health", timeout=30).status_code == 200, 60,
             "/health 200 again after the stall")


def test_health_turns_503_when_an_engine_thread_dies(ops):
    server, _ = ops
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
    _arm(server.url, kind="crash", model=GEMMA)
    reply = httpx.post(server.url + "/api/generate", json={**counting(3), "stream": False},
                       timeout=300)
    assert reply.status_code == 500 and "died" in reply.json()["error"], reply.text
    health = httpx.get(server.url + "/health", timeout=30)
    assert health.status_code == 503, health.text
    assert f"the engine thread of {GEMMA} died" in health.json()["error"], health.text
    assert "EngineCrash" in health.json()["error"], health.text
    # liveness, not readiness: a restart cures it, so /ready does not hide the pod meanwhile
    assert httpx.get(server.url + "/ready", timeout=30).status_code == 200
    _arm(server.url, clear=True)
    # the next request for the model replaces the dead engine, and /health is 200 again
    reply = httpx.post(server.url + "/api/generate", json={**counting(3), "stream": False},
                       timeout=300)
    assert reply.status_code == 200 and reply.json()["done"] is True, reply.text
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
    assert [m["name"] for m in httpx.get(server.url + "/api/ps", timeout=30).json()["models"]
            ].count(GEMMA) == 1
    unloads = total(metric_samples(server.url), "corral_model_unloads_total", reason="engine_died")
    assert unloads == 1
