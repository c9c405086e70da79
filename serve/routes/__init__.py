"""Routes per API family."""

from __future__ import annotations

from starlette.routing import BaseRoute

from serve.routes import basic, blobs, embed, generate, models, running


def all_routes() -> list[BaseRoute]:
    return [*basic.routes, *blobs.routes, *models.routes, *generate.routes, *embed.routes,
            *running.routes]
