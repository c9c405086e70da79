"""Anthropic Messages wire shapes to and from the native chat API (reference §12), as pure
functions and one stream converter.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

from registry.errors import APIError
from serve.wire import json_kind

MESSAGES_FIELDS = {
    "model": "string", "max_tokens": "int", "messages": "any", "system": "any",
    "stream": "bool", "temperature": "float", "top_p": "float", "top_k": "int",
    "stop_sequences": "strings", "tools": "tools", "tool_choice": "object",
    "thinking": "object", "metadata": "object", "output_config": "object",
}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error",
            "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": new_id("req")}


# --- requests --------------------------------------------------------------------------------

def _image(source: Any) -> str:
    """The base64 payload of an image source (native `images` carry base64 text)."""
    if not isinstance(source, dict):
        raise APIError(400, "invalid image source")
    if source.get("type") != "base64":
        raise APIError(400, f"invalid image source type: {source.get('type') or ''}. "
                            "Only base64 images are supported.")
    data = source.get("data") or ""
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise APIError(400, f"invalid base64 image data: {err}") from None
    return data


def _tool_result(block: dict[str, Any]) -> tuple[str, list[str]]:
    content = block.get("content")
    if isinstance(content, str):
        return content, []
    text, images = "", []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            text += part["text"]
        elif part.get("type") == "image":
            if not isinstance(part.get("source"), dict):
                raise APIError(400, "invalid tool_result image source")
            images.append(_image(part["source"]))
    return text, images


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise APIError(400, f"json: cannot unmarshal {json_kind(content)} into Go struct field "
                            "MessageParam.messages.content of type []anthropic.ContentBlock")
    return content


def from_message(msg: Any, tool_names: dict[str, str]) -> list[dict[str, Any]]:
    """One Anthropic message as native messages: tool results become `tool` messages."""
    if not isinstance(msg, dict):
        raise APIError(400, "invalid message format")
    role = str(msg.get("role") or "").lower()
    text, images, calls, thinking, results = "", [], [], "", []
    for block in _blocks(msg.get("content")):
        kind = block.get("type")
        if kind == "text":
            text += block.get("text") or ""
        elif kind == "image":
            images.append(_image(block.get("source")))
        elif kind == "tool_use":
            if not block.get("id"):
                raise APIError(400, "tool_use block missing required 'id' field")
            if not block.get("name"):
                raise APIError(400, "tool_use block missing required 'name' field")
            tool_names[block["id"]] = block["name"]
            calls.append({"id": block["id"], "function": {
                "name": block["name"], "arguments": block.get("input") or {}}})
        elif kind == "tool_result":
            result_text, result_images = _tool_result(block)
            call_id = block.get("tool_use_id") or ""
            result = {"role": "tool", "content": result_text, "tool_call_id": call_id}
            if tool_names.get(call_id):
                result["tool_name"] = tool_names[call_id]
            if result_images:
                result["images"] = result_images
            results.append(result)
        elif kind == "thinking":
            thinking = block.get("thinking") or ""
    out: list[dict[str, Any]] = []
    if text or images or calls or thinking:
        message: dict[str, Any] = {"role": role, "content": text}
        for key, value in (("images", images), ("tool_calls", calls), ("thinking", thinking)):
            if value:
                message[key] = value
        out.append(message)
    # A user turn answers the tool calls before it says anything else.
    return results + out if role == "user" else out + results


def _system(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "".join(b.get("text") or "" for b in system
                       if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool.get("input_schema")
    if schema is not None and not isinstance(schema, dict):
        raise APIError(400, f"invalid input_schema for tool {json.dumps(tool.get('name'))}")
    function: dict[str, Any] = {"name": tool.get("name") or "",
                                "description": tool.get("description") or ""}
    if schema is not None:
        function["parameters"] = schema
    return {"type": "function", "function": function}


def think_value(data: dict[str, Any]) -> bool | str | None:
    thinking = data.get("thinking") or {}
    if thinking.get("type") == "enabled":
        return True
    if thinking.get("type") == "disabled":
        return False
    effort = str((data.get("output_config") or {}).get("effort") or "").strip().lower()
    effort = "high" if effort == "xhigh" else effort
    return effort if effort in ("high", "medium", "low", "max") else None


def validate(data: dict[str, Any]) -> None:
    if not data.get("model"):
        raise APIError(400, "model is required")
    if (data.get("max_tokens") or 0) <= 0:
        raise APIError(400, "max_tokens is required and must be positive")
    messages = data.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise APIError(400, f"json: cannot unmarshal {json_kind(messages)} into Go struct "
                            "field MessagesRequest.messages of type []anthropic.MessageParam")
    if not messages:
        raise APIError(400, "messages is required")


def from_messages_request(data: dict[str, Any]) -> dict[str, Any]:
    """A `/v1/messages` body as an `/api/chat` body."""
    validate(data)
    messages: list[dict[str, Any]] = []
    if system := _system(data.get("system")):
        messages.append({"role": "system", "content": system})
    tool_names: dict[str, str] = {}
    for msg in data["messages"]:
        messages += from_message(msg, tool_names)
    options: dict[str, Any] = {"num_predict": data["max_tokens"]}
    for key in ("temperature", "top_p", "top_k"):
        if data.get(key) is not None:
            options[key] = data[key]
    if data.get("stop_sequences"):
        options["stop"] = data["stop_sequences"]
    native: dict[str, Any] = {"model": data["model"], "messages": messages, "options": options,
                              "stream": bool(data.get("stream"))}
    # Server tools (web search) need Ollama's cloud; only client tools reach the model.
    tools = [_tool(t) for t in data.get("tools") or []
             if not str(t.get("type") or "").startswith("web_search")]
    if tools:
        native["tools"] = tools
    think = think_value(data)
    if think is not None:
        native["think"] = think
    return native


def estimate_input_tokens(data: dict[str, Any]) -> int:
    """Ollama's rough len/4 estimate, for message_start before the prompt is counted."""
    def size(content: Any) -> int:
        if content is None:
            return 0
        if isinstance(content, str):
            return len(content)
        if isinstance(content, list):
            total = 0
            for block in content:
                if not isinstance(block, dict):
                    continue
                total += len(block.get("text") or "") + len(block.get("thinking") or "")
                if block.get("type") in ("tool_use", "tool_result"):
                    total += len(json.dumps(block))
            return total
        return len(json.dumps(content))

    total = size(data.get("system"))
    for msg in data.get("messages") or []:
        if isinstance(msg, dict):
            total += len(str(msg.get("role") or "")) + size(msg.get("content"))
    for tool in data.get("tools") or []:
        total += len(tool.get("name") or "") + len(tool.get("description") or "")
        total += len(json.dumps(tool.get("input_schema"))) if tool.get("input_schema") else 0
    tokens = total // 4
    return tokens or (1 if data.get("messages") or data.get("system") else 0)


# --- replies ---------------------------------------------------------------------------------

def stop_reason(done_reason: str, has_tool_calls: bool) -> str | None:
    if has_tool_calls:
        return "tool_use"
    if not done_reason:
        return None
    return {"stop": "end_turn", "length": "max_tokens"}.get(done_reason, "stop_sequence")


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "tool_use", "id": call.get("id") or new_id("toolu"),
            "name": function.get("name") or "", "input": function.get("arguments") or {}}


def to_message(mid: str, model: str, native: dict[str, Any]) -> dict[str, Any]:
    message = native.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("thinking"):
        content.append({"type": "thinking", "thinking": message["thinking"], "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    calls = message.get("tool_calls") or []
    content += [_tool_use(call) for call in calls]
    return {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason(native.get("done_reason") or "", bool(calls)),
        "stop_sequence": None,
        "usage": {"input_tokens": native.get("prompt_eval_count") or 0,
                  "output_tokens": native.get("eval_count") or 0},
    }


class MessageStream:
    """Native chat chunks as Anthropic's stream events, as (event type, data) pairs.

    Order: message_start; per block content_block_start (a ping after the first),
    content_block_delta..., content_block_stop; then message_delta and message_stop.
    """

    def __init__(self, mid: str, model: str, estimated_input_tokens: int):
        self.id, self.model = mid, model
        self.input_tokens = estimated_input_tokens
        self.started = False
        self.pinged = False
        self.index = 0
        self.open: str | None = None  # the kind of the block now open: thinking or text
        self.thinking_done = False
        self.tool_ids: set[str] = set()

    def _start(self, block: dict[str, Any]) -> list[tuple[str, dict]]:
        events = [("content_block_start",
                   {"type": "content_block_start", "index": self.index, "content_block": block})]
        if not self.pinged:
            self.pinged = True
            events.append(("ping", {"type": "ping"}))
        return events

    def _close(self) -> list[tuple[str, dict]]:
        if self.open is None:
            return []
        if self.open == "thinking":
            self.thinking_done = True
        self.open = None
        self.index += 1
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index - 1})]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict]:
        return ("content_block_delta",
                {"type": "content_block_delta", "index": self.index, "delta": delta})

    def feed(self, native: dict[str, Any]) -> list[tuple[str, dict]]:
        events: list[tuple[str, dict]] = []
        if not self.started:
            self.started = True
            self.input_tokens = native.get("prompt_eval_count") or self.input_tokens
            events.append(("message_start", {"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}}))
        message = native.get("message") or {}
        thinking, text = message.get("thinking") or "", message.get("content") or ""
        if thinking and not self.thinking_done:
            if self.open != "thinking":
                events += self._close()
                events += self._start({"type": "thinking", "thinking": "", "signature": ""})
                self.open = "thinking"
            events.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
        if text:
            if self.open != "text":
                events += self._close()
                events += self._start({"type": "text", "text": ""})
                self.open = "text"
            events.append(self._delta({"type": "text_delta", "text": text}))
        for call in message.get("tool_calls") or []:
            block = _tool_use(call)
            if block["id"] in self.tool_ids:
                continue
            self.tool_ids.add(block["id"])
            events += self._close()
            events += self._start({**block, "input": {}})
            events.append(self._delta({"type": "input_json_delta",
                                       "partial_json": json.dumps(block["input"])}))
            events.append(("content_block_stop", {"type": "content_block_stop",
                                                  "index": self.index}))
            self.index += 1
        if native.get("done"):
            events += self._close()
            usage = {"input_tokens": native.get("prompt_eval_count") or self.input_tokens,
                     "output_tokens": native.get("eval_count") or 0}
            reason = stop_reason(native.get("done_reason") or "", bool(self.tool_ids))
            events.append(("message_delta", {"type": "message_delta", "delta": {
                "stop_reason": reason, "stop_sequence": None}, "usage": usage}))
            events.append(("message_stop", {"type": "message_stop"}))
        return events
