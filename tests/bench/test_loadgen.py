"""The load generator against the fake streaming server on loopback; every run is bounded."""

from __future__ import annotations

import asyncio

import pytest

from bench.adapters import LlamaCompletion, OllamaGenerate
from bench.loadgen import run_phase, single_request

pytestmark = pytest.mark.timeout(60)


def test_phase_drives_every_client_and_times_every_chunk(fake_url: str, fake_state) -> None:
    result = asyncio.run(run_phase(fake_url, OllamaGenerate("gemma3:270m"), concurrency=4, requests_per_client=2,
                                   prompts=["a", "b", "c"], num_predict=5, time_limit_s=30, seed=100))
    assert not result.timed_out
    assert len(result.records) == 8
    assert all(r.ok for r in result.records)
    assert all(r.tokens == 5 and len(r.token_times) == 5 for r in result.records)
    assert all(r.ttft is not None and r.ttft > 0 and len(r.itls) == 4 for r in result.records)
    assert sorted(r.client for r in result.records) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all("context" not in r.final and r.final["done"] for r in result.records)
    # Request n of the phase gets seed + n and prompts[n % len(prompts)].
    seeds = sorted(b["options"]["seed"] for b in fake_state.bodies)
    assert seeds == list(range(100, 108))
    stats = result.stats("corral", 4)
    assert stats.requests == 8 and stats.errors == 0 and stats.output_tokens == 40
    assert stats.tok_s and stats.tok_s > 0
    assert stats.ttft_p50 is not None and stats.itl_p99 is not None


def test_extra_fields_go_to_the_chosen_clients(fake_url: str, fake_state) -> None:
    result = asyncio.run(run_phase(fake_url, OllamaGenerate("m"), concurrency=4, requests_per_client=1,
                                   prompts=["p"], num_predict=3, time_limit_s=30,
                                   extra_for=lambda i: {"format": {"type": "object"}} if i % 2 == 0 else None))
    assert all(r.ok for r in result.records)
    with_format = [b for b in fake_state.bodies if "format" in b]
    assert len(with_format) == 2


def test_http_and_stream_errors_are_counted(fake_url: str, fake_state) -> None:
    fake_state.reject_format = True
    result = asyncio.run(run_phase(fake_url, OllamaGenerate("m"), concurrency=2, requests_per_client=1,
                                   prompts=["p"], num_predict=3, time_limit_s=30,
                                   extra_for=lambda i: {"format": "json"} if i == 0 else None))
    stats = result.stats("corral", 2)
    assert stats.errors == 1 and stats.first_error.startswith("HTTP 400")
    broken = asyncio.run(single_request(fake_url, OllamaGenerate("m"), "please FAIL", num_predict=3))
    assert not broken.ok and broken.error == "engine fell over"


def test_phase_time_limit_cuts_off_streams(fake_url: str) -> None:
    slow = OllamaGenerate("m", path="/slow/api/generate")
    result = asyncio.run(run_phase(fake_url, slow, concurrency=3, requests_per_client=5, prompts=["p"],
                                   num_predict=3, time_limit_s=0.5))
    assert result.timed_out
    assert len(result.records) == 3
    assert all(not r.ok and "time limit" in r.error for r in result.records)
    assert result.stats("corral", 3).errors == 3


def test_single_request_time_limit(fake_url: str) -> None:
    slow = OllamaGenerate("m", path="/slow/api/generate")
    record = asyncio.run(single_request(fake_url, slow, "p", num_predict=3, time_limit_s=0.3))
    assert not record.ok and "no answer within" in record.error


def test_connection_refused_is_an_error_not_a_crash() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    record = asyncio.run(single_request(f"http://127.0.0.1:{port}", OllamaGenerate("m"), "p", num_predict=1,
                                        time_limit_s=10))
    assert not record.ok and "ConnectError" in record.error


def test_llama_server_adapter_over_sse(fake_url: str, fake_state) -> None:
    result = asyncio.run(run_phase(fake_url, LlamaCompletion(), concurrency=2, requests_per_client=2,
                                   prompts=["x", "y"], num_predict=4, time_limit_s=30))
    assert all(r.ok and r.tokens == 4 and len(r.token_times) == 4 for r in result.records)
    assert all(b["prompt"].startswith("<start_of_turn>user\n") for b in fake_state.bodies)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        asyncio.run(run_phase("http://127.0.0.1:1", OllamaGenerate("m"), concurrency=0, requests_per_client=1,
                              prompts=["p"], num_predict=1, time_limit_s=1))
