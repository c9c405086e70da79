"""Anthropic request and reply translations (serve/protocols/anthropic.py), without a model."""

from __future__ import annotations

import base64
import json

import pytest

from registry.errors import APIError
from serve.protocols import anthropic as anth

PNG = base64.b64encode(b"\x89PNG fake").decode()
USER = {"role": "user", "content": "hi"}


def request(**fields):
    return anth.from_messages_request({"model": "m", "max_tokens": 16, "messages": [USER],
                                       **fields})


def bad(fn, *args, **kwargs) -> str:
    with pytest.raises(APIError) as err:
        fn(*args, **kwargs)
    assert err.value.status == 400
    return err.value.message


# --- requests --------------------------------------------------------------------------------

def test_minimal_request():
    assert request() == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         "options": {"num_predict": 16}, "stream": False}


def test_validation_order():
    assert bad(anth.from_messages_request, {"max_tokens": 0}) == "model is required"
    assert bad(anth.from_messages_request, {"model": "m", "messages": [USER]}) == \
        "max_tokens is required and must be positive"
    assert bad(anth.from_messages_request, {"model": "m", "max_tokens": -1}) == \
        "max_tokens is required and must be positive"
    assert bad(anth.from_messages_request, {"model": "m", "max_tokens": 1, "messages": []}) == \
        "messages is required"


def test_options_and_system():
    native = request(system="be brief", temperature=0.2, top_p=0.9, top_k=5,
                     stop_sequences=["END"], stream=True)
    assert native["messages"][0] == {"role": "system", "content": "be brief"}
    assert native["options"] == {"num_predict": 16, "temperature": 0.2, "top_p": 0.9,
                                 "top_k": 5, "stop": ["END"]}
    assert native["stream"] is True
    blocks = request(system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert blocks["messages"][0] == {"role": "system", "content": "ab"}
    assert request(system="")["messages"][0]["role"] == "user"


def test_content_blocks():
    native = request(messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "look "},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}},
            {"type": "text", "text": "here"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_1", "name": "weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "sunny"}]},
            {"type": "text", "text": "thanks"}]},
    ])
    assert native["messages"] == [
        {"role": "user", "content": "look here", "images": [PNG]},
        {"role": "assistant", "content": "calling", "thinking": "hmm", "tool_calls": [
            {"id": "toolu_1", "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1", "tool_name": "weather"},
        {"role": "user", "content": "thanks"},
    ]


def test_tool_result_with_string_content_and_image():
    native = request(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "42"},
        {"type": "tool_result", "tool_use_id": "u", "content": [
            {"type": "image", "source": {"type": "base64", "data": PNG}}]}]}])
    assert native["messages"] == [
        {"role": "tool", "content": "42", "tool_call_id": "t"},
        {"role": "tool", "content": "", "tool_call_id": "u", "images": [PNG]}]


@pytest.mark.parametrize("block,message", [
    ({"type": "image", "source": {"type": "url", "url": "https://x"}},
     "invalid image source type: url. Only base64 images are supported."),
    ({"type": "image"}, "invalid image source"),
    ({"type": "tool_use", "name": "f"}, "tool_use block missing required 'id' field"),
    ({"type": "tool_use", "id": "t"}, "tool_use block missing required 'name' field"),
])
def test_bad_blocks(block, message):
    assert bad(request, messages=[{"role": "user", "content": [block]}]) == message


def test_tools_and_thinking():
    native = request(tools=[
        {"name": "weather", "description": "Get weather",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "auto"}, thinking={"type": "enabled", "budget_tokens": 2048})
    assert native["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "Get weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert native["think"] is True
    assert request(thinking={"type": "disabled"})["think"] is False
    assert request(output_config={"effort": "XHigh"})["think"] == "high"
    assert request(output_config={"effort": "low"})["think"] == "low"
    assert "think" not in request(output_config={"effort": "extreme"})
    assert request(thinking={"type": "enabled"}, output_config={"effort": "low"})["think"] is True


def test_estimate_input_tokens():
    data = {"system": "x" * 8, "messages": [{"role": "user", "content": "y" * 28}]}
    assert anth.estimate_input_tokens(data) == 10  # (8 + 4 + 28) / 4
    assert anth.estimate_input_tokens({"messages": [USER]}) == 1


# --- replies ---------------------------------------------------------------------------------

def native(content="", done=False, **message):
    out = {"model": "m", "message": {"role": "assistant", "content": content, **message},
           "done": done}
    if done:
        out.update(done_reason="stop", prompt_eval_count=9, eval_count=4)
    return out


@pytest.mark.parametrize("reason,calls,want", [
    ("stop", False, "end_turn"), ("length", False, "max_tokens"),
    ("unload", False, "stop_sequence"), ("", False, None), ("stop", True, "tool_use"),
])
def test_stop_reason(reason, calls, want):
    assert anth.stop_reason(reason, calls) == want


def test_message_reply():
    r = anth.to_message("msg_1", "m", native("Hello", done=True, thinking="plan", tool_calls=[
        {"id": "call_a", "function": {"name": "f", "arguments": {"x": 1}}}]))
    assert r == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "thinking", "thinking": "plan", "signature": ""},
                    {"type": "text", "text": "Hello"},
                    {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 4}}
    assert anth.to_message("m", "m", native(done=True))["content"] == []


def kinds(events):
    return [kind for kind, _ in events]


def test_stream_text_only():
    s = anth.MessageStream("msg_1", "m", estimated_input_tokens=3)
    events = s.feed(native("Hel")) + s.feed(native("lo")) + s.feed(native(done=True))
    assert kinds(events) == ["message_start", "content_block_start", "ping",
                             "content_block_delta", "content_block_delta",
                             "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["usage"] == {"input_tokens": 3, "output_tokens": 0} and start["content"] == []
    assert events[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    assert [e[1]["delta"] for e in events[3:5]] == [{"type": "text_delta", "text": "Hel"},
                                                    {"type": "text_delta", "text": "lo"}]
    assert events[6][1] == {"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"input_tokens": 9, "output_tokens": 4}}


def test_stream_thinking_text_and_tool_blocks():
    s = anth.MessageStream("msg_1", "m", estimated_input_tokens=3)
    call = {"id": "call_z", "function": {"name": "f", "arguments": {"q": "x"}}}
    events = (s.feed(native(thinking="a")) + s.feed(native(thinking="b")) + s.feed(native("T"))
              + s.feed(native(tool_calls=[call])) + s.feed(native(tool_calls=[call]))
              + s.feed(native(done=True)))
    assert kinds(events) == [
        "message_start",
        "content_block_start", "ping", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    starts = [d for k, d in events if k == "content_block_start"]
    assert [(d["index"], d["content_block"]["type"]) for d in starts] == [
        (0, "thinking"), (1, "text"), (2, "tool_use")]
    assert starts[2]["content_block"] == {"type": "tool_use", "id": "call_z", "name": "f",
                                          "input": {}}
    json_delta = events[10][1]["delta"]
    assert json_delta["type"] == "input_json_delta"
    assert json.loads(json_delta["partial_json"]) == {"q": "x"}
    stops = [d["index"] for k, d in events if k == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_of_an_empty_reply():
    s = anth.MessageStream("msg_1", "m", estimated_input_tokens=1)
    assert kinds(s.feed(native(done=True))) == ["message_start", "message_delta",
                                                "message_stop"]


def test_error_body():
    body = anth.error_body(404, "model 'x' not found")
    assert body["type"] == "error" and body["request_id"].startswith("req_")
    assert body["error"] == {"type": "not_found_error", "message": "model 'x' not found"}
    for status, kind in [(400, "invalid_request_error"), (401, "authentication_error"),
                         (403, "permission_error"), (429, "rate_limit_error"),
                         (503, "overloaded_error"), (529, "overloaded_error"),
                         (500, "api_error")]:
        assert anth.error_body(status, "m")["error"]["type"] == kind
