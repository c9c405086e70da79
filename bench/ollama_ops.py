"""Model lifecycle over Ollama's API: load (empty prompt), unload (`keep_alive: 0`), `/api/ps`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx


class OpFailed(RuntimeError):
    pass


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line:
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(value, dict):
                return value
            break
    return {}


async def _generate_empty(
    client: httpx.AsyncClient, base_url: str, body: dict[str, Any], timeout_s: float
) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    response = await client.post(base_url.rstrip("/") + "/api/generate", json=body, timeout=timeout_s)
    wall = time.perf_counter() - start
    data = _last_json(response.text)
    if response.status_code >= 400 or "error" in data:
        raise OpFailed(f"HTTP {response.status_code}: {data.get('error') or response.text[:200]}")
    return wall, data


async def load_model(
    client: httpx.AsyncClient, base_url: str, model: str, timeout_s: float = 900.0
) -> tuple[float, dict[str, Any]]:
    """Ollama's load request: `/api/generate` with no prompt. Returns (client wall s, response)."""
    return await _generate_empty(client, base_url, {"model": model, "stream": False}, timeout_s)


async def unload_model(
    client: httpx.AsyncClient, base_url: str, model: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    """`keep_alive: 0` with no prompt, then wait until `/api/ps` no longer lists the model.

    Unloading drops the model's KV cache, prefix cache included: the bench's way to make the
    next request cold without restarting the server."""
    deadline = time.perf_counter() + timeout_s
    _, data = await _generate_empty(
        client, base_url, {"model": model, "keep_alive": 0, "stream": False}, timeout_s
    )
    while time.perf_counter() < deadline:
        loaded = await running_models(client, base_url)
        if loaded is None or not any(_same_model(name, model) for name in loaded):
            return data
        await asyncio.sleep(0.2)
    raise OpFailed(f"{model} still listed by /api/ps {timeout_s:.0f} s after unloading")


async def running_models(client: httpx.AsyncClient, base_url: str) -> list[str] | None:
    """Names `/api/ps` lists, or None when the server has no usable `/api/ps`."""
    try:
        response = await client.get(base_url.rstrip("/") + "/api/ps", timeout=10.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        models = response.json().get("models") or []
    except (json.JSONDecodeError, AttributeError):
        return None
    return [str(m.get("name") or m.get("model") or "") for m in models if isinstance(m, dict)]


def _same_model(listed: str, wanted: str) -> bool:
    def norm(name: str) -> str:
        name = name.lower()
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

    return norm(listed) == norm(wanted) or norm(listed).endswith("/" + norm(wanted))
