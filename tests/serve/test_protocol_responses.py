"""The Responses API translation as pure functions: request items to chat, events in order."""

from __future__ import annotations

import pytest

from registry.errors import APIError
from serve.protocols import responses as resp


def test_input_items_become_chat_messages():
    chat = resp.to_chat_request({
        "model": "m", "instructions": "Be brief.", "max_output_tokens": 9,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "input": [{"role": "developer", "content": "Rules."},
                  {"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "Hi"}]},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "ok"}]})
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool"]
    assert [c["id"] for c in chat["messages"][3]["tool_calls"]] == ["c1", "c2"]
    assert chat["max_tokens"] == 9 and chat["tools"][0]["function"]["name"] == "f"
    assert chat["response_format"]["json_schema"]["schema"] == {"type": "object"}
    native = resp.from_responses_request({"model": "m", "input": "Hi"})
    assert native["messages"] == [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("bad", [{"input": 3}, {"input": [{"type": "web_search_call"}]},
                                 {"input": "x", "tools": [{"type": "web_search"}]}])
def test_unsupported_inputs_are_400s(bad):
    with pytest.raises(APIError) as err:
        resp.to_chat_request({"model": "m", **bad})
    assert err.value.status == 400


def test_stream_events_text_then_call():
    stream = resp.ResponseStream(resp.ResponseObject("resp_1", {"model": "m"}))
    events = stream.start()
    events += stream.feed({"message": {"content": "Hel"}})
    events += stream.feed({"message": {"content": "lo"}})
    events += stream.feed({"message": {"content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {"a": 1}}}]}})
    events += stream.feed({"message": {"content": ""}, "done": True, "done_reason": "stop",
                           "prompt_eval_count": 3, "eval_count": 4})
    kinds = [k for k, _ in events]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added",
                     "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done",
                     "response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["output"][1]["arguments"] == '{"a":1}'
    assert final["usage"]["total_tokens"] == 7


def test_non_streamed_length_is_incomplete():
    out = resp.to_response(resp.ResponseObject("resp_1", {"model": "m"}),
                           {"message": {"content": "ab"}, "done_reason": "length"})
    assert out["status"] == "incomplete" and out["output"][0]["content"][0]["text"] == "ab"
