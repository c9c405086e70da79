"""Routes per API family."""

from __future__ import annotations

from starlette.routing import BaseRoute

from serve.routes import anthropic, basic, blobs, debug, embed, generate, health, models, openai
from serve.routes import running, transfer


def all_routes() -> list[BaseRoute]:
    return [*basic.routes, *health.routes, *blobs.routes, *models.routes, *generate.routes, *embed.routes,
            *running.routes, *openai.routes, *anthropic.routes, *transfer.routes, *debug.routes]
