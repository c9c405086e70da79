"""Request bodies of the native API: field kinds per Go struct and the shared value checks."""

from __future__ import annotations

from typing import Any, Mapping

from registry.errors import APIError
from serve.duration import DurationError, keep_alive_seconds
from serve.wire import json_kind

GENERATE_FIELDS = {
    "model": "string", "name": "string", "prompt": "string", "suffix": "string",
    "system": "string", "template": "string", "context": "ints", "stream": "bool", "raw": "bool",
    "format": "raw", "keep_alive": "duration", "images": "strings", "options": "object",
    "think": "think", "truncate": "bool", "shift": "bool", "logprobs": "bool",
    "top_logprobs": "int", "_debug_render_only": "bool",
}
CHAT_FIELDS = {
    "model": "string", "name": "string", "messages": "messages", "stream": "bool",
    "format": "raw", "keep_alive": "duration", "tools": "tools", "options": "object",
    "think": "think", "truncate": "bool", "shift": "bool", "logprobs": "bool",
    "top_logprobs": "int", "_debug_render_only": "bool",
}
EMBED_FIELDS = {
    "model": "string", "name": "string", "input": "input", "keep_alive": "duration",
    "truncate": "bool", "dimensions": "int", "options": "object",
}
EMBEDDINGS_FIELDS = {
    "model": "string", "name": "string", "prompt": "string", "keep_alive": "duration",
    "options": "object",
}
MESSAGE_FIELDS = {
    "role": "string", "content": "string", "thinking": "string", "images": "strings",
    "tool_calls": "any", "tool_name": "string", "tool_call_id": "string",
}
THINK_LEVELS = ("high", "medium", "low", "max")


def keep_alive(data: Mapping[str, Any]) -> float | None:
    """Seconds (inf = forever) or None when the request didn't say."""
    if data.get("keep_alive") is None:
        return None
    try:
        return keep_alive_seconds(data["keep_alive"])
    except DurationError as err:
        raise APIError(400, str(err)) from None


def think(data: Mapping[str, Any]) -> bool | str | None:
    value = data.get("think")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in THINK_LEVELS:
            return value
        if value in ("true", "false"):
            return value == "true"
        raise APIError(
            400,
            f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, or false)',
        )
    raise APIError(
        400, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'
    )


def top_logprobs(data: Mapping[str, Any]) -> int:
    n = data.get("top_logprobs") or 0
    if not 0 <= n <= 20:
        raise APIError(400, "top_logprobs must be between 0 and 20")
    return n


def messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chat messages with Ollama's lower-cased roles; wrong field types are 400s."""
    out = []
    for raw in data.get("messages") or []:
        for name, kind in MESSAGE_FIELDS.items():
            value = raw.get(name)
            if value is None or kind == "any":
                continue
            ok = isinstance(value, str) if kind == "string" else (
                isinstance(value, list) and all(isinstance(v, str) for v in value))
            if not ok:
                raise APIError(
                    400,
                    f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                    f"Message.messages.{name} of type {'string' if kind == 'string' else '[]string'}",
                )
        message = dict(raw)
        message["role"] = (raw.get("role") or "").lower()
        message["content"] = raw.get("content") or ""
        out.append(message)
    return out
