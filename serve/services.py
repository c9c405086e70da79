"""What the routes work with: the model store and the model runtime, built once from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from registry.defaults import ensure_default_models
from registry.store import Store
from registry.templates import detect_template as detect_named_template
from serve.settings import Settings

log = logging.getLogger("corral.serve")


def detect_template(chat_template: str) -> tuple[str, str, dict[str, Any]] | None:
    """create's autodetection: the closest named template to a GGUF's chat template."""
    named = detect_named_template(chat_template)
    if named is None:
        return None
    return named.name, named.template, named.parameters or {}


@dataclass
class Services:
    settings: Settings
    store: Store
    pull_for_create: Callable | None = None

    detect_template = staticmethod(detect_template)

    @classmethod
    async def start(cls, settings: Settings) -> "Services":
        from serve.routes.models import validate_template

        store = Store(settings.models_dir)
        await run_in_threadpool(store.housekeeping, settings.noprune)
        if settings.default_models:
            created = await run_in_threadpool(
                ensure_default_models, store,
                validate_template=validate_template, detect_template=detect_template,
            )
            for name in created:
                log.info("imported embedded model %s", name)
        return cls(settings=settings, store=store)

    async def forget_model(self, name: str) -> None:
        """A deleted model's loaded instances go too (the runtime lands with the engine)."""

    async def close(self) -> None:
        pass
