"""Adapter models on a shared base: keep_alive per adapter, the base pinned, LRU slots, and
eviction of adapters before bases (pseudo-devices, a fake clock, a recording loader)."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.devices import DeviceInventory
from scheduler.residency import ModelRef, Residency, ResidencyConfig, RunnerOptions

GiB = 1024**3


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


class FakeBase:
    """A loaded base: records what it loads, holds adapters in a dict like an engine's slots."""

    def __init__(self, events, ref):
        self.events, self.ref, self.loras = events, ref, {}
        events.append(("load", ref.key))
        self.engine = self
        self.died = None  # an engine's: why its thread died

    def add_adapter(self, ref):
        self.loras[ref.key] = ref
        self.events.append(("add", ref.key))
        return 1000

    def remove_adapter(self, key):
        self.loras.pop(key)
        self.events.append(("remove", key))

    def add_request(self, *args, lora=None, **kwargs):
        return lora

    def close(self):
        self.events.append(("unload", self.ref.key))


def make(**cfg):
    events, clock = [], Clock()
    res = Residency(DeviceInventory.from_spec("cpu:3GiB"),
                    loader=lambda ref, opts, placement: FakeBase(events, ref),
                    estimator=lambda ref, opts: 1 * GiB,
                    config=ResidencyConfig(**cfg), clock=clock)
    return res, events, clock


BASE = ModelRef(key="base", name="base:latest")


def adapter(key: str, base: ModelRef = BASE) -> ModelRef:
    return ModelRef(key=key, name=f"{key}:latest", base=base, adapter={"adapter.gguf": key})


def test_adapters_share_one_base_and_tag_their_requests():
    async def go():
        res, events, _ = make()
        a1 = await res.acquire(adapter("a1"), RunnerOptions())
        a2 = await res.acquire(adapter("a2"), RunnerOptions())
        plain = await res.acquire(BASE, RunnerOptions())
        assert events == [("load", "base"), ("add", "a1"), ("add", "a2")]
        assert len(res.all_runners()) == 1 and set(res.adapters) == {"a1", "a2"}
        assert a1.instance.engine.add_request([1]) == "a1"
        assert plain.instance.engine.add_request([1]) is None
        for lease in (a1, a2, plain):
            await lease.release()
        await res.shutdown()

    asyncio.run(go())


def test_base_stays_while_an_adapter_is_kept():
    async def go():
        res, events, clock = make(default_keep_alive=100)
        lease = await res.acquire(adapter("a1"), RunnerOptions(), keep_alive=500)
        await lease.release()
        clock.now += 200  # past the base's own keep_alive, within the adapter's
        await res.tick()
        assert res.runners and "a1" in res.adapters
        assert res.expires_at(res.all_runners()[0]) == pytest.approx(res.expires_at(res.adapters["a1"]), abs=1)
        clock.now += 301
        await res.tick()  # the adapter expires; the base's timer had already run out
        await res.tick()
        await res._settle()
        assert events[-2:] == [("remove", "a1"), ("unload", "base")]
        assert not res.runners and not res.adapters

    asyncio.run(go())


def test_base_own_keep_alive_outlasts_its_adapter():
    async def go():
        res, events, clock = make(default_keep_alive=100)
        lease = await res.acquire(adapter("a1"), RunnerOptions(), keep_alive=0)
        await lease.release()
        await res._settle()
        assert events[-1] == ("remove", "a1") and res.runners  # the base keeps its own 100 s
        clock.now += 101
        await res.tick()
        await res._settle()
        assert events[-1] == ("unload", "base")

    asyncio.run(go())


def test_max_loras_evicts_the_least_recently_used_idle_adapter():
    async def go():
        res, events, clock = make(max_loras=2)
        for key in ("a1", "a2", "a1", "a3"):
            clock.now += 1
            await (await res.acquire(adapter(key), RunnerOptions())).release()
        await res._settle()
        assert set(res.adapters) == {"a1", "a3"}
        assert ("remove", "a2") in events and ("remove", "a1") not in events
        await res.shutdown()

    asyncio.run(go())


def test_full_slots_wait_for_a_busy_adapter():
    async def go():
        res, events, _ = make(max_loras=1)
        busy = await res.acquire(adapter("a1"), RunnerOptions())
        waiting = asyncio.create_task(res.acquire(adapter("a2"), RunnerOptions()))
        await asyncio.sleep(0.05)
        assert not waiting.done() and "a2" not in res.adapters
        await busy.release()
        lease = await asyncio.wait_for(waiting, 5)
        assert set(res.adapters) == {"a2"}
        await lease.release()
        await res.shutdown()

    asyncio.run(go())


def test_eviction_frees_adapters_before_bases():
    async def go():
        res, events, clock = make(max_loaded_models=1)
        await (await res.acquire(adapter("a1"), RunnerOptions(), keep_alive=-1)).release()
        other = ModelRef(key="other", name="other:latest")
        await (await res.acquire(other, RunnerOptions())).release()
        await res._settle()
        assert events.index(("remove", "a1")) < events.index(("unload", "base"))
        assert [r.ref.key for r in res.all_runners()] == ["other"] and not res.adapters
        await res.shutdown()

    asyncio.run(go())


def test_stop_adapter_model_keeps_the_base():
    async def go():
        res, events, _ = make()
        await (await res.acquire(adapter("a1"), RunnerOptions())).release()
        assert await res.expire("a1")
        await res._settle()
        assert not res.adapters and res.runners
        assert await res.expire("base")
        await res._settle()
        assert not res.runners

    asyncio.run(go())
