"""OpenAI wire shapes to and from the native API (reference §12), as pure functions.

Requests become native bodies (`/api/chat`, `/api/generate`, `/api/embed`); native replies
become OpenAI objects. Translation failures are `APIError(400, ...)` with Ollama's texts.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import string
import struct
from typing import Any

from registry.errors import APIError
from registry.names import ModelName
from serve.protocols.native import unix_seconds
from serve.wire import encode, json_kind

FINGERPRINT = "fp_ollama"

# Field kinds for decode_body: top-level type errors are 400s naming the Go struct field.
CHAT_FIELDS = {
    "model": "string", "messages": "any", "stream": "bool", "stream_options": "object",
    "max_tokens": "int", "max_completion_tokens": "int", "seed": "int", "stop": "any",
    "temperature": "float", "frequency_penalty": "float", "presence_penalty": "float",
    "top_p": "float", "response_format": "object", "tools": "tools", "reasoning": "object",
    "reasoning_effort": "string", "logprobs": "bool", "top_logprobs": "int",
    "ignore_eos": "bool", "_debug_render_only": "bool",
}
COMPLETION_FIELDS = {
    "model": "string", "prompt": "string", "frequency_penalty": "float", "max_tokens": "int",
    "presence_penalty": "float", "seed": "int", "stop": "any", "stream": "bool",
    "stream_options": "object", "temperature": "float", "top_p": "float", "suffix": "string",
    "logprobs": "int", "ignore_eos": "bool", "_debug_render_only": "bool",
}
EMBED_FIELDS = {"model": "string", "input": "any", "dimensions": "int",
                "encoding_format": "string"}

_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
            "max": "max", "xhigh": "max", "ultra": "max"}
_IMAGE_PREFIXES = ("data:;base64,",) + tuple(
    f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp"))


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def chat_id() -> str:
    return f"chatcmpl-{random.randrange(999)}"  # Ollama's ids: small and not unique


def completion_id() -> str:
    return f"cmpl-{random.randrange(999)}"


def tool_call_id() -> str:
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def go_type(value: Any) -> str:
    """Go's %T of a JSON value decoded into `any`."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


# --- requests --------------------------------------------------------------------------------

def think_from_effort(effort: str | None) -> bool | str | None:
    if not effort:
        return None
    if effort not in _EFFORTS:
        raise APIError(400, f'invalid reasoning value: {json.dumps(effort)} (must be "minimal", '
                            '"low", "medium", "high", "xhigh", "ultra", "max", or "none")')
    return _EFFORTS[effort]


def decode_image_url(url: str) -> str:
    """The base64 payload of a data URL (native `images` carry base64 text)."""
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image URLs are not currently supported, please use base64 "
                            "encoded data instead")
    prefix = next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None)
    if prefix is None:
        raise APIError(400, "invalid image input")
    payload = url[len(prefix):]
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "invalid image input") from None
    return payload


def from_tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) to native ones (arguments an object)."""
    out = []
    for call in calls:
        function = (call or {}).get("function") or {}
        args = function.get("arguments")
        if not isinstance(args, dict):
            try:
                args = json.loads(args) if isinstance(args, str) else None
            except ValueError:
                args = None
            if not isinstance(args, dict):
                raise APIError(400, "invalid tool call arguments")
        native: dict[str, Any] = {"function": {"name": function.get("name") or "",
                                               "arguments": args}}
        if call.get("id"):
            native["id"] = call["id"]
        out.append(native)
    return out


def _tool_name(messages: list[dict], call_id: str) -> str:
    for message in reversed(messages):  # the last call with this id wins, as in Ollama
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == call_id:
                return (call.get("function") or {}).get("name") or ""
    return ""


def _native_message(role: str, **fields: Any) -> dict[str, Any]:
    return {"role": role, **{k: v for k, v in fields.items() if v}}


def _part_message(role: str, part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise APIError(400, "invalid message format")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise APIError(400, "invalid message format")
        return {"role": role, "content": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise APIError(400, "invalid message format")
        return {"role": role, "content": "", "images": [decode_image_url(url)]}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise APIError(400, "invalid input_audio format")
        data = audio.get("data")
        if not isinstance(data, str):
            raise APIError(400, "invalid input_audio format: missing data")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as err:
            raise APIError(400, f"invalid input_audio base64 data: {err}") from None
        return {"role": role, "content": "", "images": [data]}
    raise APIError(400, "invalid message format")


def from_messages(messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        if not isinstance(msg, dict):
            raise APIError(400, "invalid message format")
        role = msg.get("role") or ""
        if not isinstance(role, str):
            raise APIError(400, "invalid message format")
        if role.lower() == "developer":
            role = "system"  # OpenAI's newer name for the system role
        tool_name, call_id = "", msg.get("tool_call_id") or ""
        if role.lower() == "tool":
            tool_name = msg.get("name") or (_tool_name(messages, call_id) if call_id else "")
        raw_calls = msg.get("tool_calls")
        content = msg.get("content")
        if isinstance(content, str):
            out.append(_native_message(
                role, content=content, thinking=msg.get("reasoning"),
                tool_calls=from_tool_calls(raw_calls or []), tool_name=tool_name,
                tool_call_id=call_id) | {"content": content})
        elif isinstance(content, list):
            parts = [_part_message(role, part) for part in content]
            if role.lower() == "tool":
                for part in parts:
                    part.update(_native_message(role, tool_name=tool_name, tool_call_id=call_id))
            out += parts
            if out and raw_calls:
                out[-1].update(_native_message(
                    role, tool_calls=from_tool_calls(raw_calls), tool_name=tool_name,
                    tool_call_id=call_id, thinking=msg.get("reasoning")))
        else:
            if raw_calls is None:  # content may be left out only beside tool calls
                raise APIError(400, f"invalid message content type: {go_type(content)}")
            out.append(_native_message(
                role, content="", thinking=msg.get("reasoning"),
                tool_calls=from_tool_calls(raw_calls), tool_call_id=call_id) | {"content": ""})
    return out


def stop_option(stop: Any, strict: bool) -> list[str] | None:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        if strict:
            for s in stop:
                if not isinstance(s, str):
                    raise APIError(400, f"invalid type for 'stop' field: {go_type(s)}")
        return [s for s in stop if isinstance(s, str)]
    return None


def response_format(fmt: Any) -> Any:
    if not isinstance(fmt, dict):
        return None
    kind = str(fmt.get("type") or "").strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        return fmt["json_schema"].get("schema")
    return None


def from_chat_request(data: dict[str, Any]) -> dict[str, Any]:
    """A `/v1/chat/completions` body as an `/api/chat` body."""
    messages = data.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise APIError(400, f"json: cannot unmarshal {json_kind(messages)} into Go struct "
                            "field ChatCompletionRequest.messages of type []openai.Message")
    if not messages:
        raise APIError(400, "[] is too short - 'messages'")
    options: dict[str, Any] = {}
    stop = stop_option(data.get("stop"), strict=False)
    if stop is not None:
        options["stop"] = stop
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        max_tokens = data.get("max_completion_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    # Surprise 13: omitted temperature and top_p are 1.0, overriding the Modelfile.
    options["temperature"] = 1.0 if data.get("temperature") is None else data["temperature"]
    for key in ("seed", "frequency_penalty", "presence_penalty"):
        if data.get(key) is not None:
            options[key] = data[key]
    options["top_p"] = 1.0 if data.get("top_p") is None else data["top_p"]
    if data.get("ignore_eos"):
        options["ignore_eos"] = True
    reasoning = data.get("reasoning")
    effort = (reasoning or {}).get("effort") if reasoning is not None else data.get(
        "reasoning_effort")
    native: dict[str, Any] = {
        "model": data.get("model") or "",
        "messages": from_messages(messages),
        "options": options,
        "stream": bool(data.get("stream")),
    }
    fmt = response_format(data.get("response_format"))
    if fmt is not None:
        native["format"] = fmt
    if data.get("tools"):
        native["tools"] = data["tools"]
    think = think_from_effort(effort if isinstance(effort, str) else None)
    if think is not None:
        native["think"] = think
    if data.get("logprobs"):
        native["logprobs"] = True
    if data.get("top_logprobs"):
        native["top_logprobs"] = data["top_logprobs"]
    if data.get("_debug_render_only"):
        native["_debug_render_only"] = True
    return native


def from_completion_request(data: dict[str, Any]) -> dict[str, Any]:
    """A `/v1/completions` body as an `/api/generate` body."""
    options: dict[str, Any] = {}
    stop = stop_option(data.get("stop"), strict=True)
    if stop is not None:
        options["stop"] = stop
    if data.get("max_tokens") is not None:
        options["num_predict"] = data["max_tokens"]
    options["temperature"] = 1.0 if data.get("temperature") is None else data["temperature"]
    if data.get("seed") is not None:
        options["seed"] = data["seed"]
    options["frequency_penalty"] = data.get("frequency_penalty") or 0.0
    options["presence_penalty"] = data.get("presence_penalty") or 0.0
    options["top_p"] = data.get("top_p") or 1.0
    if data.get("ignore_eos"):
        options["ignore_eos"] = True
    native: dict[str, Any] = {
        "model": data.get("model") or "",
        "prompt": data.get("prompt") or "",
        "options": options,
        "stream": bool(data.get("stream")),
    }
    if data.get("suffix"):
        native["suffix"] = data["suffix"]
    logprobs = data.get("logprobs")
    if logprobs and logprobs > 0:
        native["logprobs"] = True
        native["top_logprobs"] = logprobs
    if data.get("_debug_render_only"):
        native["_debug_render_only"] = True
    return native


def from_embed_request(data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """An `/v1/embeddings` body as an `/api/embed` body, and the encoding format asked for."""
    encoding = data.get("encoding_format") or ""
    if encoding and encoding.lower() not in ("float", "base64"):
        raise APIError(400, f"Invalid value for 'encoding_format' = {encoding}. "
                            "Supported values: ['float', 'base64'].")
    texts = data.get("input")
    if texts == "":
        texts = [""]
    if texts is None or texts == []:
        raise APIError(400, "invalid input")
    native: dict[str, Any] = {"model": data.get("model") or "", "input": texts}
    if data.get("dimensions"):
        native["dimensions"] = data["dimensions"]
    return native, encoding.lower()


# --- replies ---------------------------------------------------------------------------------

def usage(native: dict[str, Any]) -> dict[str, int]:
    prompt, completion = native.get("prompt_eval_count") or 0, native.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def to_tool_calls(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Native tool calls (object arguments) as OpenAI's (arguments a JSON string)."""
    out = []
    for call in calls or []:
        function = call.get("function") or {}
        out.append({
            "id": call.get("id") or tool_call_id(),
            "index": function.get("index") or 0,
            "type": "function",
            "function": {"name": function.get("name") or "",
                         "arguments": encode(function.get("arguments") or {}).decode()},
        })
    return out


def _logprobs(native: dict[str, Any]) -> dict[str, Any] | None:
    return {"content": native["logprobs"]} if native.get("logprobs") else None


def to_chat_completion(cid: str, native: dict[str, Any]) -> dict[str, Any]:
    message = native.get("message") or {}
    calls = to_tool_calls(message.get("tool_calls"))
    reason = native.get("done_reason") or ""
    if reason == "stop" and calls:
        reason = "tool_calls"
    out_message: dict[str, Any] = {"role": message.get("role") or "assistant",
                                   "content": message.get("content") or ""}
    if message.get("thinking"):
        out_message["reasoning"] = message["thinking"]
    if calls:
        out_message["tool_calls"] = calls
    choice: dict[str, Any] = {"index": 0, "message": out_message, "finish_reason": reason or None}
    if (logprobs := _logprobs(native)) is not None:
        choice["logprobs"] = logprobs
    out = {
        "id": cid, "object": "chat.completion", "created": unix_seconds(native.get("created_at")),
        "model": native.get("model") or "", "system_fingerprint": FINGERPRINT,
        "choices": [choice], "usage": usage(native),
    }
    if native.get("_debug_info"):
        out["_debug_info"] = native["_debug_info"]
    return out


class ChatStream:
    """Native chat chunks as `chat.completion.chunk` objects, one stream's state."""

    def __init__(self, cid: str, include_usage: bool):
        self.id = cid
        self.include_usage = include_usage
        self.created: int | None = None
        self.first_sent = False
        self.tool_call_sent = False

    def _chunk(self, native: dict[str, Any], delta: dict[str, Any],
               finish: str | None = None, logprobs: dict | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": native.get("model") or "", "system_fingerprint": FINGERPRINT,
                "choices": [choice]}

    def feed(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        if self.created is None:
            self.created = unix_seconds(native.get("created_at"))
        message = native.get("message") or {}
        content, thinking = message.get("content") or "", message.get("thinking") or ""
        calls = to_tool_calls(message.get("tool_calls"))
        logprobs = _logprobs(native)
        chunks = []
        # The metrics-only trailer is not a content chunk, unless it is all there is.
        trailer = native.get("done") and self.first_sent and not (
            content or thinking or calls or logprobs)
        if not trailer:
            role = {} if self.first_sent else {"role": "assistant"}
            if thinking and (content or calls):  # one emission, split as OpenAI streams it
                chunks.append(self._chunk(native, {**role, "reasoning": thinking},
                                          logprobs=logprobs))
                delta: dict[str, Any] = {"content": content}
            else:
                delta = {**role, "content": content}
                if thinking:
                    delta["reasoning"] = thinking
            if calls:
                delta["tool_calls"] = calls
                self.tool_call_sent = True
            chunks.append(self._chunk(native, delta, logprobs=None if len(chunks) else logprobs))
            self.first_sent = True
        if native.get("done"):
            reason = native.get("done_reason") or "stop"
            if reason == "stop" and self.tool_call_sent:
                reason = "tool_calls"
            finish = self._chunk(native, {}, finish=reason)
            chunks.append(finish)
            if self.include_usage:
                chunks.append({**finish, "choices": [], "usage": usage(native)})
        return chunks


def completion_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Native logprobs in the legacy completions shape (tokens, offsets, top maps)."""
    if not entries:
        return None
    offsets, offset = [], 0
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.get("token") or "")
    return {
        "tokens": [e.get("token") or "" for e in entries],
        "token_logprobs": [e.get("logprob") for e in entries],
        "top_logprobs": [{t.get("token") or "": t.get("logprob") for t in e.get("top_logprobs")
                          or []} for e in entries],
        "text_offset": offsets,
    }


def _completion_choice(native: dict[str, Any]) -> dict[str, Any]:
    choice: dict[str, Any] = {"text": native.get("response") or "", "index": 0,
                              "finish_reason": native.get("done_reason") or None}
    if (logprobs := completion_logprobs(native.get("logprobs"))) is not None:
        choice["logprobs"] = logprobs
    return choice


def to_completion(cid: str, native: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": cid, "object": "text_completion", "created": unix_seconds(native.get("created_at")),
        "model": native.get("model") or "", "system_fingerprint": FINGERPRINT,
        "choices": [_completion_choice(native)], "usage": usage(native),
    }


def completion_chunks(cid: str, native: dict[str, Any], include_usage: bool) -> list[dict]:
    """One native generate chunk as `text_completion` chunks (plus the usage chunk at the end)."""
    chunk: dict[str, Any] = {
        "id": cid, "object": "text_completion", "created": unix_seconds(None),
        "choices": [_completion_choice(native)], "model": native.get("model") or "",
        "system_fingerprint": FINGERPRINT,
    }
    if not include_usage:
        return [chunk]
    chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not native.get("done"):
        return [chunk]
    return [chunk, {**chunk, "choices": [], "usage": usage(native)}]


def floats_base64(values: list[float]) -> str:
    """Little-endian float32 bytes in base64: what the SDK's default encoding decodes."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def to_embedding_list(model: str, native: dict[str, Any], encoding: str) -> dict[str, Any]:
    embeddings = native.get("embeddings") or []
    data = [{"object": "embedding",
             "embedding": floats_base64(e) if encoding == "base64" else e,
             "index": i} for i, e in enumerate(embeddings)]
    tokens = native.get("prompt_eval_count") or 0
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def to_model(name: str, modified_at: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": unix_seconds(modified_at),
            "owned_by": ModelName.parse(name).namespace}


def to_model_list(tags: dict[str, Any]) -> dict[str, Any]:
    data = [to_model(m.get("model") or m.get("name") or "", m.get("modified_at"))
            for m in tags.get("models") or []]
    return {"object": "list", "data": data or None}  # Ollama's nil slice: null when empty
