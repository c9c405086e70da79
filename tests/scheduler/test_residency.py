"""Residency rules with pseudo-devices, a fake clock and a recording loader."""

import asyncio
import math

import pytest

from registry.errors import APIError
from scheduler.devices import DeviceInventory, parse_size
from scheduler.residency import ModelRef, Residency, ResidencyConfig, RunnerOptions

GiB = 1024**3


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeInstance:
    def __init__(self, log, ref, placement):
        self.log, self.ref, self.placement = log, ref, placement
        log.append(("load", ref.key, tuple(placement.device_ids)))

    def close(self):
        self.log.append(("unload", self.ref.key))


def make(spec="cpu:10GiB", sizes=None, **cfg):
    events, clock = [], Clock()
    sizes = sizes or {}
    res = Residency(
        DeviceInventory.from_spec(spec),
        loader=lambda ref, opts, placement: FakeInstance(events, ref, placement),
        estimator=lambda ref, opts: sizes.get(ref.key, 1 * GiB),
        config=ResidencyConfig(**cfg),
        clock=clock,
    )
    return res, events, clock


def ref(key, replicas=1):
    return ModelRef(key=key, name=f"{key}:latest", replicas=replicas)


def run(coro):
    return asyncio.run(coro)


def test_parse_size_and_spec():
    assert parse_size("3GiB") == 3 * GiB
    assert parse_size("512MB") == 512_000_000
    inv = DeviceInventory.from_spec("cpu:3GiB,cpu:3GiB,cuda:1:20GiB")
    assert [d.id for d in inv.devices] == ["cpu", "cpu#1", "cuda:1"]
    assert [d.torch_device for d in inv.devices] == ["cpu", "cpu", "cuda:1"]
    with pytest.raises(ValueError):
        DeviceInventory.from_spec("tpu:3GiB")


def test_timer_starts_when_last_request_finishes():
    async def go():
        res, events, clock = make(default_keep_alive=300)
        a = await res.acquire(ref("a"), RunnerOptions())
        b = await res.acquire(ref("a"), RunnerOptions())
        assert events == [("load", "a", ("cpu",))]  # the second lease reused the runner
        clock.now += 1000
        await res.tick()
        assert res.runners  # in use: never expires
        await a.release()
        assert res.all_runners()[0].deadline is None  # still one request in flight
        await b.release()
        assert res.all_runners()[0].deadline == clock.now + 300
        clock.now += 299
        await res.tick()
        assert res.runners
        clock.now += 2
        await res.tick()
        assert not res.runners and events[-1] == ("unload", "a")
    run(go())


def test_a_runner_whose_engine_died_is_replaced_by_the_next_request():
    class DeadEngine:
        died = "EngineCrash: injected"

    async def go():
        res, events, _ = make(default_keep_alive=300)
        held = await res.acquire(ref("a"), RunnerOptions())
        first = held.runner
        first.instance.engine = DeadEngine()  # its thread died under a request still leased
        lease = await res.acquire(ref("a"), RunnerOptions())
        assert lease.runner is not first and res.all_runners() == [lease.runner]
        await held.release()  # the failed request lets go of the replaced runner
        await asyncio.sleep(0)
        assert events == [("load", "a", ("cpu",)), ("unload", "a"), ("load", "a", ("cpu",))]
        await lease.release()
        assert res.all_runners() == [lease.runner]
    run(go())


def test_keep_alive_zero_unloads_when_idle_and_negative_is_forever():
    async def go():
        res, events, clock = make()
        lease = await res.acquire(ref("a"), RunnerOptions(), keep_alive=0)
        assert res.runners
        await lease.release()
        assert not res.runners
        lease = await res.acquire(ref("b"), RunnerOptions(), keep_alive=math.inf)
        await lease.release()
        clock.now += 10**9
        await res.tick()
        assert "b" in res.runners
    run(go())


def test_request_without_keep_alive_keeps_current_duration():
    async def go():
        res, events, clock = make(default_keep_alive=300)
        lease = await res.acquire(ref("a"), RunnerOptions(), keep_alive=10)
        await lease.release()
        lease = await res.acquire(ref("a"), RunnerOptions())  # no keep_alive: stays 10s
        await lease.release()
        assert res.all_runners()[0].deadline == clock.now + 10
    run(go())


def test_expire_unloads_idle_runner_and_defers_busy_one():
    async def go():
        res, events, clock = make()
        lease = await res.acquire(ref("a"), RunnerOptions())
        assert await res.expire("a")
        assert res.runners  # busy: unloads right after
        await lease.release()
        assert not res.runners
        assert not await res.expire("missing")
    run(go())


def test_lru_victim_is_idle_and_oldest():
    async def go():
        res, events, clock = make("cpu:10GiB", sizes={"a": 3.5 * GiB, "b": 3.5 * GiB, "c": 3.5 * GiB})
        for key in ("a", "b"):
            clock.now += 1
            await (await res.acquire(ref(key), RunnerOptions())).release()
        busy = await res.acquire(ref("a"), RunnerOptions())  # a is most recent but busy
        clock.now += 1
        await res.acquire(ref("c"), RunnerOptions())  # 3 GiB left: 80% of it is too little
        assert ("unload", "b") in events and ("unload", "a") not in events
        assert set(res.runners) == {"a", "c"}
        await busy.release()
    run(go())


def test_no_eviction_of_busy_model_until_it_finishes():
    async def go():
        res, events, clock = make("cpu:4GiB", sizes={"a": 3 * GiB, "b": 3 * GiB})
        busy = await res.acquire(ref("a"), RunnerOptions())
        waiter = asyncio.create_task(res.acquire(ref("b"), RunnerOptions()))
        await asyncio.sleep(0.05)
        assert not waiter.done() and ("unload", "a") not in events
        await busy.release()
        lease = await asyncio.wait_for(waiter, 2)
        assert events[-2:] == [("unload", "a"), ("load", "b", ("cpu",))]
        await lease.release()
    run(go())


def test_split_placement_when_no_single_device_fits():
    async def go():
        res, events, clock = make("cpu:3GiB,cpu:3GiB", sizes={"big": 4 * GiB})
        lease = await res.acquire(ref("big"), RunnerOptions())
        assert events == [("load", "big", ("cpu", "cpu#1"))]
        placement = lease.runner.placement
        assert placement.is_split and sum(placement.allocation.values()) == 4 * GiB
        assert placement.max_memory() == {"cpu": 4 * GiB}
        await lease.release()
    run(go())


def test_too_large_model_is_a_clear_error():
    async def go():
        res, events, clock = make("cpu:2GiB", sizes={"huge": 50 * GiB})
        with pytest.raises(APIError) as err:
            await res.acquire(ref("huge"), RunnerOptions())
        assert err.value.status == 500
        assert "huge:latest" in err.value.message and "50.0 GiB" in err.value.message
        assert not res.runners and res.inventory.reserved("cpu") == 0
    run(go())


def test_runner_option_change_reloads_after_in_flight_requests():
    async def go():
        res, events, clock = make()
        old = await res.acquire(ref("a"), RunnerOptions(num_ctx=2048))
        same = await res.acquire(ref("a"), RunnerOptions(num_ctx=2048))
        await same.release()
        reload = asyncio.create_task(res.acquire(ref("a"), RunnerOptions(num_ctx=8192)))
        await asyncio.sleep(0.05)
        assert not reload.done()
        await old.release()
        new = await asyncio.wait_for(reload, 2)
        assert new.runner.options.num_ctx == 8192
        assert events == [("load", "a", ("cpu",)), ("unload", "a"), ("load", "a", ("cpu",))]
        await new.release()
    run(go())


def test_max_loaded_models():
    async def go():
        res, events, clock = make("cpu:100GiB", max_loaded_models=2)
        for key in ("a", "b", "c"):
            clock.now += 1
            await (await res.acquire(ref(key), RunnerOptions())).release()
        assert set(res.runners) == {"b", "c"}
    run(go())


def test_replicas_on_distinct_devices_and_least_outstanding_routing():
    async def go():
        res, events, clock = make("cpu:4GiB,cpu:4GiB,cpu:4GiB", sizes={"a": 2 * GiB})
        first = await res.acquire(ref("a", replicas=2), RunnerOptions())
        runners = res.runners["a"]
        assert len(runners) == 2
        assert {r.placement.device_ids[0] for r in runners} == {"cpu", "cpu#1"} or len(
            {r.placement.device_ids[0] for r in runners}) == 2
        second = await res.acquire(ref("a", replicas=2), RunnerOptions())
        assert second.runner is not first.runner  # the idle replica gets it
        third = await res.acquire(ref("a", replicas=2), RunnerOptions())
        assert {first.runner.refcount, second.runner.refcount} == {1, 2}
        for lease in (first, second, third):
            await lease.release()
        clock.now += 301
        await res.tick()
        assert not res.runners  # replicas obey keep_alive together
        assert all(res.inventory.reserved(d.id) == 0 for d in res.inventory.devices)
    run(go())


def test_full_queue_is_503():
    async def go():
        res, events, clock = make("cpu:4GiB", sizes={"a": 3 * GiB, "b": 3 * GiB}, max_queue=1)
        busy = await res.acquire(ref("a"), RunnerOptions())
        waiting = asyncio.create_task(res.acquire(ref("b"), RunnerOptions()))
        await asyncio.sleep(0.02)
        with pytest.raises(APIError) as err:
            await res.acquire(ref("c"), RunnerOptions())
        assert err.value.status == 503
        assert err.value.message == "server busy, please try again.  maximum pending requests exceeded"
        await busy.release()
        await (await waiting).release()
    run(go())


def test_loads_and_unloads_are_reported_with_their_reasons():
    from scheduler.stats import StatsListener

    class Recorder(StatsListener):
        def __init__(self):
            self.events = []

        def model_loaded(self, model, devices, seconds):
            self.events.append(("loaded", model, tuple(devices), seconds >= 0))

        def model_unloaded(self, model, reason):
            self.events.append(("unloaded", model, reason))

    async def go():
        rec, clock = Recorder(), Clock()
        res = Residency(DeviceInventory.from_spec("cpu:2.5GiB"),
                        loader=lambda r, o, p: FakeInstance([], r, p),
                        estimator=lambda r, o: 1 * GiB,
                        config=ResidencyConfig(default_keep_alive=5, max_loaded_models=2),
                        clock=clock, listener=rec)
        for key in ("a", "b"):
            await (await res.acquire(ref(key), RunnerOptions())).release()
        await (await res.acquire(ref("c"), RunnerOptions())).release()  # evicts a, the LRU
        await (await res.acquire(ref("c"), RunnerOptions(num_ctx=8192))).release()  # reload
        clock.now += 10
        await res.tick()  # b and c expire
        return rec.events

    events = run(go())
    assert [e for e in events if e[0] == "loaded"] == [
        ("loaded", f"{k}:latest", ("cpu",), True) for k in ("a", "b", "c", "c")]
    assert [e for e in events if e[0] == "unloaded"] == [
        ("unloaded", "a:latest", "evicted"), ("unloaded", "c:latest", "reload"),
        ("unloaded", "b:latest", "expired"), ("unloaded", "c:latest", "expired")]
