"""OpenAI's Responses API (`/v1/responses`, stateless as in Ollama) to and from the native API.

A Responses body is first rewritten as a Chat Completions body (input items as messages,
`instructions` as the system message, flat function tools as nested ones, `text.format` as
`response_format`), so the chat translation in `serve.protocols.openai` does the rest. Native
replies become a `response` object, or, streamed, OpenAI's event sequence: created, in_progress,
then per output item added → deltas → done, then completed.
"""

from __future__ import annotations

import random
import string
import time
from typing import Any

from registry.errors import APIError
from serve.protocols import openai as oai
from serve.wire import encode, json_kind

RESPONSES_FIELDS = {
    "model": "string", "input": "any", "instructions": "string", "stream": "bool",
    "max_output_tokens": "int", "temperature": "float", "top_p": "float", "tools": "any",
    "text": "object", "reasoning": "object", "tool_choice": "any", "store": "bool",
    "metadata": "any", "previous_response_id": "string", "parallel_tool_calls": "bool",
}


def _id(prefix: str) -> str:
    return prefix + "_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=24))


def response_id() -> str:
    return _id("resp")


# --- requests --------------------------------------------------------------------------------

def _part(part: Any) -> dict[str, Any]:
    kind = (part or {}).get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text") or ""}
    if kind == "input_image":
        url = part.get("image_url")
        return {"type": "image_url", "image_url": {"url": url.get("url") if isinstance(
            url, dict) else url}}
    raise APIError(400, f"unsupported input content type: {kind}")


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role") or "user"
    content = item.get("content")
    if isinstance(content, list):
        content = [_part(p) for p in content]
    return {"role": "system" if role == "developer" else role, "content": content or ""}


def _messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if data.get("instructions"):
        messages.append({"role": "system", "content": data["instructions"]})
    items = data.get("input")
    if isinstance(items, str):
        return messages + [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise APIError(400, f"json: cannot unmarshal {json_kind(items)} into Go struct field "
                            "ResponsesRequest.input of type []openai.ResponsesInputItem")
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name") or "",
                                 "arguments": item.get("arguments") or "{}"}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # parallel calls are one assistant turn
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id") or "",
                             "content": output if isinstance(output, str) else encode(output).decode()})
        elif kind in (None, "message") and isinstance(item, dict) and "role" in item:
            messages.append(_message(item))
        elif kind != "reasoning":  # reasoning items from an earlier turn carry nothing needed
            raise APIError(400, f"unsupported input item type: {kind}")
    return messages


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    if not isinstance(tools, list):
        raise APIError(400, "tools must be an array")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise APIError(400, f"unsupported tool type: {(tool or {}).get('type')}")
        function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        out.append({"type": "function", "function": function})
    return out


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": fmt.get("name") or "", "schema": fmt.get("schema")}}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    return None


def to_chat_request(data: dict[str, Any]) -> dict[str, Any]:
    """A Responses body as a Chat Completions body."""
    chat: dict[str, Any] = {"model": data.get("model") or "", "messages": _messages(data),
                            "stream": bool(data.get("stream"))}
    for ours, theirs in (("max_tokens", "max_output_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("reasoning", "reasoning")):
        if data.get(theirs) is not None:
            chat[ours] = data[theirs]
    if (tools := _tools(data.get("tools"))) is not None:
        chat["tools"] = tools
    if (fmt := _response_format(data.get("text"))) is not None:
        chat["response_format"] = fmt
    return chat


def from_responses_request(data: dict[str, Any]) -> dict[str, Any]:
    """A `/v1/responses` body as an `/api/chat` body."""
    return oai.from_chat_request(to_chat_request(data))


# --- replies ---------------------------------------------------------------------------------

def _usage(native: dict[str, Any]) -> dict[str, Any]:
    counts = oai.usage(native)
    return {"input_tokens": counts["prompt_tokens"], "output_tokens": counts["completion_tokens"],
            "total_tokens": counts["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [_text_part(text)] if status == "completed" else []}


def _call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": _id("fc"), "call_id": call["id"],
            "name": call["function"]["name"], "arguments": call["function"]["arguments"],
            "status": status}


class ResponseObject:
    """The `response` object's envelope: what the request asked for, echoed as OpenAI does."""

    def __init__(self, rid: str, data: dict[str, Any]):
        self.id = rid
        self.data = data
        self.created_at = int(time.time())

    def build(self, status: str, output: list[dict], native: dict[str, Any] | None) -> dict:
        incomplete = status == "incomplete"
        text = self.data.get("text") if isinstance(self.data.get("text"), dict) else {}
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "model": self.data.get("model") or "", "output": output,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": self.data.get("instructions"),
            "max_output_tokens": self.data.get("max_output_tokens"),
            "metadata": self.data.get("metadata") or {},
            "parallel_tool_calls": self.data.get("parallel_tool_calls", True),
            "temperature": self.data.get("temperature", 1.0),
            "top_p": self.data.get("top_p", 1.0),
            "tool_choice": self.data.get("tool_choice", "auto"),
            "tools": self.data.get("tools") or [],
            "text": {"format": (text or {}).get("format") or {"type": "text"}},
            "usage": _usage(native) if native is not None else None,
        }

    def status(self, native: dict[str, Any]) -> str:
        return "incomplete" if native.get("done_reason") == "length" else "completed"


def to_response(envelope: ResponseObject, native: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed native chat reply as a `response` object."""
    message = native.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content") or not message.get("tool_calls"):
        output.append(_message_item(_id("msg"), message.get("content") or "", "completed"))
    output += [_call_item(c) for c in oai.to_tool_calls(message.get("tool_calls"))]
    return envelope.build(envelope.status(native), output, native)


class ResponseStream:
    """Native chat chunks as the Responses API's streamed events, one stream's state."""

    def __init__(self, envelope: ResponseObject):
        self.envelope = envelope
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None  # the open message item
        self.text = ""

    def _event(self, kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, event

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        snapshot = self.envelope.build("in_progress", [], None)
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def _open_message(self) -> list[tuple[str, dict[str, Any]]]:
        item = _message_item(_id("msg"), "", "in_progress")
        self.message, self.text = item, ""
        index = len(self.output)
        self.output.append(item)
        return [self._event("response.output_item.added", output_index=index, item=item),
                self._event("response.content_part.added", item_id=item["id"],
                            output_index=index, content_index=0, part=_text_part(""))]

    def _close_message(self) -> list[tuple[str, dict[str, Any]]]:
        item, index = self.message, len(self.output) - 1
        if item is None:
            return []
        self.message = None
        done = _message_item(item["id"], self.text, "completed")
        self.output[index] = done
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [self._event("response.output_text.done", **ids, text=self.text, logprobs=[]),
                self._event("response.content_part.done", **ids, part=_text_part(self.text)),
                self._event("response.output_item.done", output_index=index, item=done)]

    def _call(self, call: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        done = _call_item(call)
        index = len(self.output)
        self.output.append(done)
        ids = {"item_id": done["id"], "output_index": index}
        return [self._event("response.output_item.added", output_index=index,
                            item={**done, "arguments": "", "status": "in_progress"}),
                self._event("response.function_call_arguments.delta", **ids,
                            delta=done["arguments"]),
                self._event("response.function_call_arguments.done", **ids,
                            arguments=done["arguments"]),
                self._event("response.output_item.done", output_index=index, item=done)]

    def feed(self, native: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        message = native.get("message") or {}
        events: list[tuple[str, dict[str, Any]]] = []
        if content := message.get("content") or "":
            if self.message is None:
                events += self._open_message()
            self.text += content
            events.append(self._event("response.output_text.delta", item_id=self.message["id"],
                                      output_index=len(self.output) - 1, content_index=0,
                                      delta=content, logprobs=[]))
        for call in oai.to_tool_calls(message.get("tool_calls")):
            events += self._close_message() + self._call(call)
        if native.get("done"):
            if not self.output:  # an empty answer is still one (empty) message
                events += self._open_message()
            events += self._close_message()
            status = self.envelope.status(native)
            final = self.envelope.build(status, self.output, native)
            kind = "response.completed" if status == "completed" else "response.incomplete"
            events.append(self._event(kind, response=final))
        return events
