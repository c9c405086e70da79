"""What the engine tells liveness and metrics: finished-request stats, a dead thread, a drain's
end-of-time failure (issue 9)."""

from __future__ import annotations

import time

import pytest

from backends.sampling_params import SamplingParams
from backends.testing import tiny_llama
from registry.errors import APIError
from scheduler.engine import EngineConfig, LLMEngine
from scheduler.faults import INJECTOR, Fault
from scheduler.stats import RequestStats, StatsListener


class Recorder(StatsListener):
    def __init__(self) -> None:
        self.finished: list[RequestStats] = []
        self.rejected: list[str] = []

    def request_finished(self, stats: RequestStats) -> None:
        self.finished.append(stats)

    def queue_rejected(self, model: str) -> None:
        self.rejected.append(model)


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def engine(model, listener: StatsListener, start: bool = True, **kw) -> LLMEngine:
    cfg = dict(block_size=4, num_kv_blocks=64, num_ctx=256, max_num_batched_tokens=64, name="tiny")
    cfg.update(kw)
    return LLMEngine(model, EngineConfig(**cfg), start=start, listener=listener)


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, num_predict=n)


def test_finished_requests_are_reported_with_their_tokens_and_times(model):
    rec = Recorder()
    eng = engine(model, rec)
    try:
        outs = [list(eng.add_request([5 + i, 9, 11, 13, 17, 19, 23], greedy(6))) for i in range(3)]
        stream = eng.add_request([7, 8, 9], greedy(-1))
        next(iter(stream))
        stream.abort()
        deadline = time.monotonic() + 30
        while len(rec.finished) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        eng.shutdown()
    done = [s for s in rec.finished if s.finished_reason == "length"]
    assert len(done) == 3 and [s.model for s in done] == ["tiny"] * 3
    for stats, out in zip(done, outs):
        assert stats.num_prompt_tokens == out[-1].prompt_eval_count == 7
        assert stats.num_generation_tokens == out[-1].eval_count == 6
        assert len(stats.inter_token_latencies) == 5
        assert 0 <= stats.queue_time <= stats.time_to_first_token <= stats.e2e_latency
        assert stats.num_prefix_query_tokens == 7
    aborted = [s for s in rec.finished if s.finished_reason == "abort"]
    assert len(aborted) == 1 and aborted[0].num_generation_tokens >= 1


def test_a_full_queue_is_reported(model):
    rec = Recorder()
    eng = engine(model, rec, start=False, max_queue=1)
    eng.add_request([1, 2, 3], greedy(2))
    with pytest.raises(APIError) as err:
        eng.add_request([1, 2, 3], greedy(2))
    assert err.value.status == 503 and rec.rejected == ["tiny"]
    eng.shutdown()


def test_a_crashed_thread_fails_its_requests_and_says_why(model):
    eng = engine(model, Recorder(), name="crashy")
    INJECTOR.arm(Fault(kind="crash", model="crashy"))
    try:
        with pytest.raises(APIError, match="died"):
            list(eng.add_request([1, 2, 3], greedy(4)))
        eng._thread.join(10)
        health = eng.health()
        assert not health.alive and "EngineCrash" in health.error
        with pytest.raises(APIError, match="the engine of crashy died"):
            eng.add_request([1, 2, 3], greedy(2))
    finally:
        INJECTOR.clear()
        eng.shutdown()


def test_health_times_the_step_now_running(model):
    eng = engine(model, Recorder(), name="slow")
    INJECTOR.arm(Fault(kind="stall", model="slow", seconds=1.5))
    try:
        assert eng.health().alive and eng.health().step_seconds == 0.0
        stream = eng.add_request([1, 2, 3], greedy(2))
        deadline = time.monotonic() + 10
        while eng.health().step_seconds < 0.5:
            assert time.monotonic() < deadline, "the stalled step was never seen"
            time.sleep(0.02)
        assert list(stream)[-1].finished
    finally:
        INJECTOR.clear()
        eng.shutdown()


def test_fail_requests_ends_every_stream_with_the_error(model):
    rec = Recorder()
    eng = engine(model, rec)
    try:
        streams = [eng.add_request([1, 2, 3 + i], greedy(-1)) for i in range(3)]
        for s in streams:
            next(iter(s))
        eng.fail_requests(APIError(503, "drain ran out"))
        for s in streams:
            with pytest.raises(APIError, match="drain ran out"):
                list(s)
        assert eng.stats().free_blocks == eng.stats().total_blocks
        assert [s.finished_reason for s in rec.finished] == ["error"] * 3
    finally:
        eng.shutdown()
