"""What the routes work with: the model store and the model runtime, built once from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from registry.adapters import adapter_files, base_model
from registry.errors import APIError
from registry.model import Model
from registry.names import parse_name
from registry.oci import RegistryOptions, ensure_keypair, load_docker_auths, pull_model
from registry.paths import UNRESTRICTED, PathPolicy
from registry.secrets import check_private
from registry.store import Store
from registry.templates import detect_template as detect_named_template
from scheduler.devices import DeviceInventory
from scheduler.instances import InstanceConfig, InstanceFactory, ModelInstance
from scheduler.residency import Lease, ModelRef, Residency, ResidencyConfig, RunnerOptions
from scheduler.stats import NO_STATS, StatsListener
from serve.settings import Settings
from serve.version import CORRAL_VERSION

log = logging.getLogger("corral.serve")


def detect_template(chat_template: str) -> tuple[str, str, dict[str, Any]] | None:
    """create's autodetection: the closest named template to a GGUF's chat template."""
    named = detect_named_template(chat_template)
    if named is None:
        return None
    return named.name, named.template, named.parameters or {}


def path_policy(settings: Settings) -> PathPolicy:
    """Where create may read server-side paths: CORRAL_LOCAL_MODELS, else nowhere once keys
    guard the server, else anywhere (an in-process app built without the environment)."""
    if settings.local_models is not None:
        return PathPolicy.under(settings.local_models)
    return PathPolicy(()) if settings.keys_configured else UNRESTRICTED


def build_residency(settings: Settings, listener: StatsListener = NO_STATS) -> Residency:
    inventory = (DeviceInventory.from_spec(settings.devices) if settings.devices
                 else DeviceInventory.detect())
    factory = InstanceFactory(InstanceConfig(
        cache_dir=settings.cache_dir, num_parallel=settings.num_parallel,
        max_queue=settings.max_queue, max_loras=settings.max_loras, listener=listener,
        kv_cache_type=settings.kv_cache_type,
        gguf_weights=settings.gguf_weights,
    ))
    return Residency(inventory, factory.load, factory.estimate, ResidencyConfig(
        default_keep_alive=settings.keep_alive, max_loaded_models=settings.max_loaded_models,
        max_queue=settings.max_queue, default_replicas=settings.replicas,
        max_loras=settings.max_loras,
    ), listener=listener)


@dataclass
class Services:
    settings: Settings
    store: Store
    residency: Residency | None = None
    pull_for_create: Callable | None = None
    _timers: asyncio.Task | None = field(default=None, repr=False)

    detect_template = staticmethod(detect_template)

    @property
    def paths(self) -> PathPolicy:
        return path_policy(self.settings)

    def __post_init__(self) -> None:
        if self.pull_for_create is None:
            # create's missing `from` model is pulled from its registry with default options
            self.pull_for_create = lambda name: pull_model(
                self.store, name, self.registry_options(name))

    def registry_options(self, name: str, insecure: bool = False) -> RegistryOptions:
        """Options for a transfer of `name`: over http where the request asks (`insecure`) or
        the operator listed its registry (CORRAL_INSECURE_REGISTRIES), for every pull and push."""
        s = self.settings
        credentials = load_docker_auths(s.docker_config) if s.docker_config else {}
        credentials.update({host: (user, pw) for host, user, pw in s.registry_auth})
        return RegistryOptions(
            insecure=insecure or _listed_host(name, s.insecure_registries),
            credentials=credentials, key_path=s.key_path,
            user_agent=f"corral/{CORRAL_VERSION}", noprune=s.noprune,
        )

    @classmethod
    async def start(cls, settings: Settings, listener: StatsListener = NO_STATS) -> "Services":
        """The store and the runtime; importing models is start-up work (serve/startup.py)."""
        store = Store(settings.models_dir)
        if settings.key_path is not None:
            try:
                if ensure_keypair(settings.key_path):
                    log.info("created a new ed25519 key at %s", settings.key_path)
            except OSError as err:
                log.warning("could not create the key %s: %s", settings.key_path, err)
        if settings.key_path is not None and (why := check_private(settings.key_path)):
            log.warning("%s: pulls and pushes will refuse to sign with it", why)
        await run_in_threadpool(store.housekeeping, settings.noprune)
        services = cls(settings=settings, store=store,
                       residency=build_residency(settings, listener))
        services._timers = asyncio.create_task(services.residency.run_timers())
        return services

    def model_ref(self, model: Model) -> ModelRef:
        """An adapter model's ref names its base, whose loaded runner it shares."""
        files = adapter_files(model)
        base = self.model_ref(base_model(model)) if files else None
        return ModelRef(key=model.digest, name=model.display_name, model=model,
                        replicas=self.settings.replicas, base=base, adapter=files or None)

    async def acquire(self, model: Model, options: RunnerOptions,
                      keep_alive: float | None) -> Lease:
        if self.residency is None:
            raise RuntimeError("this server has no model runtime")
        return await self.residency.acquire(self.model_ref(model), options, keep_alive)

    async def unload(self, model: Model) -> bool:
        return self.residency is not None and await self.residency.expire(model.digest)

    async def close(self) -> None:
        if self._timers is not None:
            self._timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timers
        if self.residency is not None:
            await self.residency.shutdown()


def instance_of(lease: Lease) -> ModelInstance:
    return lease.instance


def _listed_host(name: str, hosts: tuple[str, ...]) -> bool:
    """Whether `name`'s registry host is one of `hosts` (a name that does not parse is the
    transfer's own 400 to report, not this check's)."""
    try:
        host = parse_name(name).host.lower()
    except APIError:
        return False
    return host in {h.lower() for h in hosts}
