"""Start-up work, done after the socket listens so probes can answer while it runs.

In order: the embedded default models, `CORRAL_PULL` (pulled when missing), `CORRAL_CREATE`
(created when missing or when its Modelfile changed), `CORRAL_PRELOAD` (pulled when missing,
then loaded with its keep_alive). Each step is listed in the lifecycle's `pending` until done;
one that fails is logged with its reason and kept in `failed`, and the rest still run. /ready
turns 200 when every step has run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Awaitable, Callable

from backends.loader import import_model_code
from registry.create import request_from_body, run_create
from registry.defaults import ensure_default_models
from registry.errors import APIError
from registry.model import Model, ModelNotFoundError, get_model
from registry.oci import pull_model
from serve.duration import DurationError, keep_alive_seconds
from serve.lifecycle import Lifecycle
from serve.options import resolve_options

log = logging.getLogger("corral.startup")

Step = tuple[str, Callable[[], Awaitable[None]]]


class StartupWork:
    def __init__(self, services, lifecycle: Lifecycle):
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self.lifecycle = lifecycle

    def steps(self) -> list[Step]:
        s = self.settings
        steps: list[Step] = []
        if s.default_models:
            steps.append(("import default models", self.import_defaults))
        steps += [(f"pull {name}", lambda n=name: self.ensure_pulled(n)) for name in s.pull]
        steps += [(f"create {name}", lambda n=name, p=path: self.create(n, p))
                  for name, path in s.create]
        steps += [(f"preload {name}", lambda n=name, k=keep: self.preload(n, k))
                  for name, keep in s.preload]
        return steps

    async def run(self) -> None:
        steps = self.steps()
        self.lifecycle.pending = [label for label, _ in steps]
        for label, step in steps:
            try:
                await step()
                log.info("start-up: %s done", label)
            except Exception as exc:  # noqa: BLE001 - reported by /ready; the rest still runs
                reason = exc.message if isinstance(exc, APIError) else (str(exc) or type(exc).__name__)
                log.error("start-up: %s failed: %s", label, reason)
                self.lifecycle.failed[label] = reason
            finally:
                self.lifecycle.pending.remove(label)
        self.lifecycle.started = True
        failed = f"; failed: {', '.join(self.lifecycle.failed)}" if self.lifecycle.failed else ""
        log.info("start-up done: ready%s", failed)
        # After /ready, not before it: a load that comes meanwhile waits on the same imports.
        # A daemon thread, so a shutdown never waits for it.
        threading.Thread(target=_import_model_code, name="corral-imports", daemon=True).start()

    async def import_defaults(self) -> None:
        from serve.routes.models import validate_template  # the create route's own check

        created = await asyncio.to_thread(
            ensure_default_models, self.store, validate_template=validate_template,
            detect_template=self.services.detect_template)
        for name in created:
            log.info("imported embedded model %s", name)

    def _find(self, name: str) -> Model | None:
        try:
            return get_model(self.store, name)
        except ModelNotFoundError:
            return None

    async def ensure_pulled(self, name: str) -> Model:
        model = await asyncio.to_thread(self._find, name)
        if model is not None:
            return model
        progress = pull_model(self.store, name, self.services.registry_options(name))
        log.info("start-up: pulling %s", name)
        await asyncio.to_thread(lambda: [None for _ in progress])
        return await asyncio.to_thread(get_model, self.store, name)

    async def create(self, name: str, path: str) -> None:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        record = self.settings.cache_dir / "startup-creates.json"
        done = _read_json(record)
        if done.get(name) == digest and await asyncio.to_thread(self._find, name) is not None:
            return  # created from this very Modelfile before
        from serve.routes.models import validate_template

        def build() -> None:
            req = request_from_body(self.store, {"model": name, "path": path})
            run_create(self.store, req, noprune=self.settings.noprune,
                       validate_template=validate_template,
                       detect_template=self.services.detect_template,
                       pull=self.services.pull_for_create)

        await asyncio.to_thread(build)
        done[name] = digest
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(done, indent=1))

    async def preload(self, name: str, keep_alive: str) -> None:
        seconds = _keep_alive(keep_alive)
        model = await self.ensure_pulled(name)
        options = resolve_options(model.params, None, self.settings.context_length)
        lease = await self.services.acquire(model, options.runner, seconds)
        await lease.release()


def _import_model_code() -> None:
    try:
        import_model_code()
    except Exception as exc:  # noqa: BLE001 - the first load imports (and reports) it again
        log.warning("importing the model code ahead of the first load failed: %s", exc)


def _keep_alive(raw: str) -> float | None:
    if not raw:
        return None
    try:
        return keep_alive_seconds(float(raw))
    except ValueError:
        pass
    try:
        return keep_alive_seconds(raw)
    except DurationError as err:
        raise APIError(400, f"keep_alive {raw!r}: {err}") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
