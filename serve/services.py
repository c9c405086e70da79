"""What the routes work with: the model store and the model runtime, built once from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from registry.store import Store
from serve.settings import Settings

log = logging.getLogger("corral.serve")


@dataclass
class Services:
    settings: Settings
    store: Store

    @classmethod
    async def start(cls, settings: Settings) -> "Services":
        store = Store(settings.models_dir)
        await run_in_threadpool(store.housekeeping, settings.noprune)
        if settings.default_models:
            from registry.defaults import ensure_default_models

            await run_in_threadpool(ensure_default_models, store)
        return cls(settings=settings, store=store)

    async def close(self) -> None:
        pass
