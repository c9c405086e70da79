"""Which models are resident, where, and for how long (Ollama's server/sched.go, reference §9).

A request `acquire`s a lease on a loaded instance ("runner") of its model for its runner options.
A loaded runner with the same options is taken at once; anything else (a load, a reload after a
runner-option change, evictions) happens under one loading lock, so a load never blocks requests
to models already loaded. The keep_alive timer starts when the last lease ends; `tick()` unloads
runners whose timer ran out. Eviction picks idle runners in least-recently-used order; a busy one
is only marked to unload once idle. With replicas, one model runs as several runners on distinct
devices and each lease goes to the one with the least outstanding work.

An adapter model (a ref with `base`) leases its base's runner and keeps its LoRA weights in that
runner's engine (`AdapterRunner`, its own keep_alive). Each resident adapter pins the base, so
the base's own timer cannot fire while any adapter is kept; `max_loras` bounds the adapters per
base (LRU among the idle ones), and eviction frees idle adapters before any base.

The clock, the device inventory, the memory estimate and the loader are injected, so the rules are
tested with pseudo-devices and a fake clock, and the same code runs on CUDA.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from backends.threads import in_own_thread
from registry.errors import APIError
from scheduler.adapters import AdapterRunner, AdapterView
from scheduler.devices import DeviceInventory
from scheduler.placement import Placement, place_single, place_split
from scheduler.stats import NO_STATS, StatsListener

log = logging.getLogger("corral.scheduler")

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"


@dataclass(frozen=True)
class RunnerOptions:
    """Load-time options: a change in any of them needs a reloaded instance (surprise 14)."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int | None = None
    use_mmap: bool | None = None

    def needs_reload(self, other: "RunnerOptions") -> bool:
        if self.num_gpu >= 0 and other.num_gpu >= 0 and self.num_gpu != other.num_gpu:
            return True
        return (self.num_ctx, self.num_batch, self.main_gpu, self.use_mmap) != (
            other.num_ctx, other.num_batch, other.main_gpu, other.use_mmap)


class Instance(Protocol):
    """What a loader returns: a loaded model ready to serve, and how to free it."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelRef:
    """What residency needs to know about a model; `model` is passed to the loader untouched."""

    key: str  # identity of the weights + layers: the manifest digest
    name: str  # display name for /api/ps and errors
    model: Any = None
    replicas: int = 1
    base: "ModelRef | None" = None  # an adapter model: the base whose runner it shares
    adapter: Any = None  # what the base instance's `add_adapter` reads (the adapter's files)


Loader = Callable[[ModelRef, RunnerOptions, Placement], Instance]
Estimator = Callable[[ModelRef, RunnerOptions], int]


@dataclass(eq=False)
class Runner:
    ref: ModelRef
    options: RunnerOptions
    instance: Instance
    placement: Placement
    keep_alive: float
    refcount: int = 0
    deadline: float | None = None  # monotonic time it unloads at; None while in use
    last_used: float = 0.0
    unloading: bool = False
    pins: int = 0  # resident adapters on this runner; each keeps it loaded

    @property
    def size(self) -> int:
        return sum(self.placement.allocation.values())

    @property
    def idle(self) -> bool:
        return self.refcount == 0


class Lease:
    """An acquired runner; `release()` (or leaving `async with`) starts its keep_alive timer."""

    def __init__(self, residency: "Residency", runner: Runner, adapter: AdapterRunner | None = None):
        self.residency = residency
        self.runner = runner
        self.adapter = adapter
        self._released = False
        self.instance = runner.instance if adapter is None else AdapterView(
            runner.instance, adapter.ref.key)

    async def release(self) -> None:
        if not self._released:
            self._released = True
            if self.adapter is not None:
                self.residency._release_adapter(self.adapter)
            await self.residency._release(self.runner)

    async def __aenter__(self) -> "Lease":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


def _engine_died(runner: Runner) -> bool:
    engine = getattr(runner.instance, "engine", None)
    return engine is not None and engine.died is not None


@dataclass
class ResidencyConfig:
    default_keep_alive: float = 300.0
    max_loaded_models: int = 0  # 0: 3 per device, as Ollama's default
    max_queue: int = 512
    default_replicas: int = 1
    max_loras: int = 4  # adapters resident per base runner (CORRAL_MAX_LORAS)


class Residency:
    def __init__(
        self,
        inventory: DeviceInventory,
        loader: Loader,
        estimator: Estimator,
        config: ResidencyConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        listener: StatsListener = NO_STATS,
    ):
        self.listener = listener
        self.inventory = inventory
        self.loader = loader
        self.estimator = estimator
        self.config = config or ResidencyConfig()
        self.clock = clock
        self.wall_clock = wall_clock
        self.runners: dict[str, list[Runner]] = {}
        self.adapters: dict[str, AdapterRunner] = {}
        self._adapter_lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._pending = 0
        self._closing: dict[Runner, asyncio.Task] = {}

    # --- public ---------------------------------------------------------------------------

    @property
    def max_loaded(self) -> int:
        return self.config.max_loaded_models or 3 * len(self.inventory.devices)

    async def acquire(
        self, ref: ModelRef, options: RunnerOptions, keep_alive: float | None = None
    ) -> Lease:
        """A lease on a runner of `ref` with `options`, loading (and evicting) as needed."""
        if ref.base is not None:
            return await self._acquire_adapter(ref, options, keep_alive)
        runner = self._ready_runner(ref, options)
        if runner is None:
            if self._pending >= self.config.max_queue:
                self.listener.queue_rejected(ref.name)
                raise APIError(503, QUEUE_FULL)
            self._pending += 1
            try:
                async with self._load_lock:
                    runner = self._ready_runner(ref, options) or await self._load(ref, options)
            finally:
                self._pending -= 1
        return self._lease(runner, keep_alive)

    async def expire(self, key: str) -> bool:
        """keep_alive 0 without a prompt: unload as soon as idle. False if not loaded."""
        adapter = self.adapters.get(key)
        if adapter is not None:
            adapter.keep_alive = 0.0
            if adapter.idle:
                await self._begin_unload_adapter(adapter)
            return True
        runners = list(self.runners.get(key, []))  # unloading empties the group
        for runner in runners:
            runner.keep_alive = 0.0
            if runner.idle and not runner.pins:  # kept while its adapters are
                await self._unload(runner, "requested")
        return bool(runners)

    async def tick(self) -> None:
        """Unload every idle runner whose keep_alive has run out."""
        now = self.clock()
        for adapter in list(self.adapters.values()):
            if adapter.idle and adapter.deadline is not None and adapter.deadline <= now:
                await self._begin_unload_adapter(adapter)
        for runner in self.all_runners():
            if runner.idle and runner.deadline is not None and runner.deadline <= now:
                await self._unload(runner, "expired")

    async def run_timers(self, interval: float = 0.25) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:
                log.exception("keep_alive timer failed")

    async def shutdown(self) -> None:
        for runner in self.all_runners():
            self._begin_unload(runner, "shutdown")
        await self._settle()

    def all_runners(self) -> list[Runner]:
        return [r for group in self.runners.values() for r in group]

    def adapters_of(self, runner: Runner) -> list[AdapterRunner]:
        return [a for a in self.adapters.values() if a.base is runner]

    def expires_at(self, runner: Runner | AdapterRunner) -> float:
        """Wall-clock expiry as /api/ps shows it (forever: far future, as Ollama); a base
        lasts at least as long as the adapters it holds."""
        own = self._expires_at(runner)
        adapters = self.adapters_of(runner) if isinstance(runner, Runner) else []
        return max([own] + [self._expires_at(a) for a in adapters])

    def _expires_at(self, runner: Runner | AdapterRunner) -> float:
        keep = runner.keep_alive
        if math.isinf(keep):
            return self.wall_clock() + 292 * 365 * 86400
        if runner.deadline is None:
            return self.wall_clock() + keep
        return self.wall_clock() + (runner.deadline - self.clock())

    # --- internals ------------------------------------------------------------------------

    def _ready_runner(self, ref: ModelRef, options: RunnerOptions) -> Runner | None:
        for runner in list(self.runners.get(ref.key, [])):
            # A dead engine thread fails every request it is given; /health has reported it
            # since it died, and the next request for the model loads it anew.
            if _engine_died(runner):
                log.error("replacing %s: its engine thread died", ref.name)
                self._begin_unload(runner, "engine_died")
        group = [
            r for r in self.runners.get(ref.key, [])
            if not r.unloading and not r.options.needs_reload(options)
        ]
        if not group:
            return None
        return min(group, key=lambda r: r.refcount)  # least outstanding work

    def _lease(self, runner: Runner, keep_alive: float | None) -> Lease:
        runner.refcount += 1
        runner.deadline = None
        runner.last_used = self.clock()
        if keep_alive is not None:
            runner.keep_alive = keep_alive
        return Lease(self, runner)

    async def _release(self, runner: Runner) -> None:
        # Never suspends: a release runs in the `finally` of a cancelled (disconnected) request,
        # where any suspension would be cancelled too; the unload runs as its own task.
        runner.refcount -= 1
        runner.last_used = self.clock()
        if runner.refcount == 0 and runner.pins == 0:
            self._start_timer(runner, runner.last_used)
        self._notify()

    def _start_timer(self, runner: Runner, since: float) -> None:
        if runner.unloading:
            return
        if runner.keep_alive <= 0:
            self._begin_unload(runner, "requested")
        elif not math.isinf(runner.keep_alive):
            runner.deadline = since + runner.keep_alive

    def _begin_unload(self, runner: Runner, reason: str) -> asyncio.Task:
        """Detach the runner now (no new leases); free its memory in a task of its own."""
        task = self._closing.get(runner)
        if task is None:
            for adapter in self.adapters_of(runner):  # they go with their engine
                self._detach_adapter(adapter)
            runner.unloading = True
            self.listener.model_unloaded(runner.ref.name, reason)
            group = self.runners.get(runner.ref.key, [])
            if runner in group:
                group.remove(runner)
            if not group:
                self.runners.pop(runner.ref.key, None)
            task = asyncio.get_running_loop().create_task(self._close(runner))
            self._closing[runner] = task
            task.add_done_callback(lambda _: self._closing.pop(runner, None))
            self._notify()
        return task

    async def _unload(self, runner: Runner, reason: str) -> None:
        await self._begin_unload(runner, reason)

    async def _close(self, runner: Runner) -> None:
        try:
            await in_own_thread(runner.instance.close)
        finally:
            self.inventory.release(runner.placement.allocation)
            log.info("unloaded %s", runner.ref.name)
            self._notify()

    # --- adapter models ----------------------------------------------------------------------

    async def _acquire_adapter(self, ref: ModelRef, options: RunnerOptions,
                               keep_alive: float | None) -> Lease:
        base = await self.acquire(ref.base, options)
        try:
            adapter = await self._resident_adapter(ref, base.runner)
        except BaseException:
            await base.release()
            raise
        adapter.refcount += 1
        adapter.deadline = None
        adapter.last_used = self.clock()
        if keep_alive is not None:
            adapter.keep_alive = keep_alive
        return Lease(self, base.runner, adapter)

    async def _resident_adapter(self, ref: ModelRef, runner: Runner) -> AdapterRunner:
        async with self._adapter_lock:
            adapter = self.adapters.get(ref.key)
            if adapter is not None and adapter.base is not runner:
                await self._begin_unload_adapter(adapter)  # its base was reloaded elsewhere
                adapter = None
            if adapter is not None:
                return adapter
            while len(self.adapters_of(runner)) >= self.config.max_loras:
                idle = [a for a in self.adapters_of(runner) if a.idle]
                if idle:
                    await self._begin_unload_adapter(min(idle, key=lambda a: a.last_used))
                else:  # every slot serves a request: wait for one to finish
                    await self._changed.wait()
            size = await in_own_thread(runner.instance.add_adapter, ref)
            adapter = AdapterRunner(ref, runner, self.config.default_keep_alive, size=size,
                                    last_used=self.clock())
            self.adapters[ref.key] = adapter
            runner.pins += 1
            log.info("loaded adapter %s on %s", ref.name, runner.ref.name)
            return adapter

    def _release_adapter(self, adapter: AdapterRunner) -> None:
        adapter.refcount -= 1
        adapter.last_used = self.clock()
        if adapter.refcount == 0:
            if adapter.keep_alive <= 0:
                self._begin_unload_adapter(adapter)
            elif not math.isinf(adapter.keep_alive):
                adapter.deadline = adapter.last_used + adapter.keep_alive

    def _detach_adapter(self, adapter: AdapterRunner) -> bool:
        """Forget the adapter and unpin its base; False if it was already gone."""
        if adapter.unloading:
            return False
        adapter.unloading = True
        if self.adapters.get(adapter.ref.key) is adapter:
            del self.adapters[adapter.ref.key]
        adapter.base.pins -= 1
        return True

    def _begin_unload_adapter(self, adapter: AdapterRunner) -> asyncio.Future:
        """Free the adapter's slot in a task; its base's own timer runs from its last use."""
        task = self._closing.get(adapter)
        if task is not None:
            return task
        if not self._detach_adapter(adapter):
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        base = adapter.base
        task = asyncio.get_running_loop().create_task(self._close_adapter(adapter))
        self._closing[adapter] = task
        task.add_done_callback(lambda _: self._closing.pop(adapter, None))
        if base.pins == 0 and base.idle:
            self._start_timer(base, base.last_used)
        self._notify()
        return task

    async def _close_adapter(self, adapter: AdapterRunner) -> None:
        try:
            if not adapter.base.unloading:
                await in_own_thread(adapter.base.instance.remove_adapter, adapter.ref.key)
        finally:
            log.info("unloaded adapter %s", adapter.ref.name)
            self._notify()

    async def _settle(self) -> None:
        """Wait for unloads in flight, so their memory counts as free again."""
        while self._closing:
            await asyncio.gather(*list(self._closing.values()), return_exceptions=True)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_idle(self, runner: Runner) -> None:
        while not (runner.idle or runner.unloading):
            await self._changed.wait()

    async def _load(self, ref: ModelRef, options: RunnerOptions) -> Runner:
        for stale in list(self.runners.get(ref.key, [])):
            # A runner-option change: in-flight requests finish on the old instance first.
            stale.keep_alive = 0.0
            await self._wait_idle(stale)
            await self._unload(stale, "reload")
        estimate = self.estimator(ref, options)
        loaded: list[Runner] = []
        for _ in range(max(1, ref.replicas or self.config.default_replicas)):
            exclude = {d for r in loaded for d in r.placement.device_ids}
            placement = await self._make_room(ref, estimate, exclude, first=not loaded)
            if placement is None:
                break  # fewer replicas than asked: as many as fit on distinct devices
            self.inventory.reserve(placement.allocation)
            started = time.monotonic()
            try:
                instance = await in_own_thread(self.loader, ref, options, placement)
            except BaseException:
                self.inventory.release(placement.allocation)
                raise
            self.listener.model_loaded(ref.name, placement.device_ids, time.monotonic() - started)
            runner = Runner(ref, options, instance, placement, self.config.default_keep_alive,
                            last_used=self.clock())
            loaded.append(runner)
            self.runners.setdefault(ref.key, []).append(runner)
            log.info("loaded %s on %s (%d bytes)", ref.name, placement.device_ids, runner.size)
        return min(loaded, key=lambda r: r.refcount)

    async def _make_room(
        self, ref: ModelRef, estimate: int, exclude: set[str], first: bool
    ) -> Placement | None:
        """Evict LRU idle runners until the model fits; split it if nothing else is left."""
        while True:
            await self._settle()
            at_cap = len(self.runners) >= self.max_loaded and ref.key not in self.runners
            placement = None if at_cap else place_single(self.inventory, estimate, exclude)
            if placement is not None:
                return placement
            adapter = self._idle_adapter_victim(ref.key)
            if adapter is not None:
                await self._begin_unload_adapter(adapter)
                continue
            victim = self._victim(ref.key)
            if victim is None:
                break
            victim.keep_alive = 0.0
            if not victim.idle:
                await self._wait_idle(victim)
            await self._unload(victim, "evicted")
        if not first:
            return None
        placement = place_split(self.inventory, estimate, exclude)
        if placement is not None:
            return placement
        free = sum(self.inventory.free(d) for d in self.inventory.devices)
        raise APIError(
            500,
            f"model '{ref.name}' requires {estimate / 2**30:.1f} GiB of memory, "
            f"which exceeds the {free / 2**30:.1f} GiB available",
        )

    def _victim(self, loading_key: str) -> Runner | None:
        candidates = [r for r in self.all_runners() if r.ref.key != loading_key and not r.unloading]
        if not candidates:
            return None
        idle = [r for r in candidates if r.idle]
        return min(idle or candidates, key=lambda r: r.last_used)

    def _idle_adapter_victim(self, loading_key: str) -> AdapterRunner | None:
        """Adapters go before bases: the LRU idle adapter not on the base being loaded."""
        idle = [a for a in self.adapters.values() if a.idle and a.base.ref.key != loading_key]
        return min(idle, key=lambda a: a.last_used) if idle else None
