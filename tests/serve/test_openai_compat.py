"""OpenAI request and reply translations (serve/protocols/openai.py), without a model."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from registry.errors import APIError
from serve.protocols import openai as oai

USER = {"role": "user", "content": "hi"}
PNG = base64.b64encode(b"\x89PNG fake").decode()


def chat(**fields):
    return oai.from_chat_request({"model": "m", "messages": [USER], **fields})


def bad(fn, *args, **kwargs) -> str:
    with pytest.raises(APIError) as err:
        fn(*args, **kwargs)
    assert err.value.status == 400
    return err.value.message


# --- chat requests ---------------------------------------------------------------------------

def test_chat_defaults_force_temperature_and_top_p():
    native = chat()
    assert native == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                      "options": {"temperature": 1.0, "top_p": 1.0}, "stream": False}


def test_chat_options():
    native = chat(temperature=0, top_p=0.5, max_tokens=7, seed=3, frequency_penalty=0.2,
                  presence_penalty=0.1, stop="\n", stream=True)
    assert native["options"] == {"temperature": 0, "top_p": 0.5, "num_predict": 7, "seed": 3,
                                 "frequency_penalty": 0.2, "presence_penalty": 0.1,
                                 "stop": ["\n"]}
    assert native["stream"] is True
    assert chat(stop=["a", 1, "b"])["options"]["stop"] == ["a", "b"]
    assert chat(max_completion_tokens=5)["options"]["num_predict"] == 5
    assert chat(max_tokens=4, max_completion_tokens=5)["options"]["num_predict"] == 4


def test_ignore_eos_reaches_the_sampling_params():
    from serve.options import resolve_options

    for native in (chat(ignore_eos=True, max_tokens=9),
                   oai.from_completion_request({"prompt": "p", "ignore_eos": True})):
        assert native["options"]["ignore_eos"] is True
        assert resolve_options({}, native["options"], 2048).sampling.ignore_eos is True
    assert "ignore_eos" not in chat(ignore_eos=False)["options"]
    assert resolve_options({}, {}, 2048).sampling.ignore_eos is False


def test_empty_messages():
    assert bad(oai.from_chat_request, {"model": "m", "messages": []}) == \
        "[] is too short - 'messages'"
    assert bad(oai.from_chat_request, {"model": "m"}) == "[] is too short - 'messages'"


def test_content_parts_become_messages_of_the_same_role():
    native = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": f"data:;base64,{PNG}"},
    ]}])
    assert native["messages"] == [
        {"role": "user", "content": "what is this?"},
        {"role": "user", "content": "", "images": [PNG]},
        {"role": "user", "content": "", "images": [PNG]},
    ]


@pytest.mark.parametrize("url,message", [
    ("https://example.com/a.png",
     "image URLs are not currently supported, please use base64 encoded data instead"),
    ("data:image/gif;base64,AAAA", "invalid image input"),
    ("data:image/png;base64,!!!", "invalid image input"),
])
def test_bad_image_urls(url, message):
    msg = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
    assert bad(chat, messages=[msg]) == message


def test_bad_parts_and_content_types():
    assert bad(chat, messages=[{"role": "user", "content": [{"type": "video"}]}]) == \
        "invalid message format"
    assert bad(chat, messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]) == \
        "invalid message format"
    assert bad(chat, messages=[{"role": "user"}]) == "invalid message content type: <nil>"
    assert bad(chat, messages=[{"role": "user", "content": 3}]) == \
        "invalid message content type: float64"


def test_developer_role_is_system():
    native = chat(messages=[{"role": "developer", "content": "be terse"}, USER])
    assert native["messages"][0] == {"role": "system", "content": "be terse"}


def test_tool_calls_and_results():
    native = chat(messages=[
        USER,
        {"role": "assistant", "content": None, "reasoning": "look it up", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_1", "name": "other", "content": "rain"},
    ], tools=[{"type": "function", "function": {"name": "weather", "parameters": {}}}])
    assistant, result, named = native["messages"][1:]
    assert assistant == {"role": "assistant", "content": "", "thinking": "look it up",
                         "tool_calls": [{"id": "call_1", "function": {
                             "name": "weather", "arguments": {"city": "Paris"}}}]}
    assert result == {"role": "tool", "content": "sunny", "tool_name": "weather",
                      "tool_call_id": "call_1"}
    assert named["tool_name"] == "other"
    assert native["tools"][0]["function"]["name"] == "weather"


def test_tool_calls_attach_to_the_last_part():
    native = chat(messages=[{"role": "assistant", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}])
    first, last = native["messages"]
    assert "tool_calls" not in first and last["tool_calls"][0]["function"]["arguments"] == {}


def test_bad_tool_call_arguments():
    msg = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}
    assert bad(chat, messages=[msg]) == "invalid tool call arguments"


@pytest.mark.parametrize("fmt,native", [
    ({"type": "json_object"}, "json"),
    ({"type": " JSON_SCHEMA ", "json_schema": {"name": "x", "schema": {"type": "object"}}},
     {"type": "object"}),
    ({"type": "text"}, None),
])
def test_response_format(fmt, native):
    assert chat(response_format=fmt).get("format") == native


@pytest.mark.parametrize("effort,think", [
    ("none", False), ("minimal", "low"), ("low", "low"), ("medium", "medium"),
    ("high", "high"), ("max", "max"), ("xhigh", "max"), ("ultra", "max"),
])
def test_reasoning_effort(effort, think):
    assert chat(reasoning_effort=effort)["think"] == think
    assert chat(reasoning={"effort": effort})["think"] == think


def test_reasoning_object_wins_and_bad_effort():
    assert "think" not in chat(reasoning={}, reasoning_effort="high")
    assert "think" not in chat()
    assert bad(chat, reasoning_effort="huge").startswith('invalid reasoning value: "huge"')


def test_logprobs_and_debug_render_pass_through():
    native = chat(logprobs=True, top_logprobs=3, _debug_render_only=True)
    assert native["logprobs"] is True and native["top_logprobs"] == 3
    assert native["_debug_render_only"] is True
    info = {"rendered_template": "<start>hi", "image_count": 0}
    reply = oai.to_chat_completion("c", {**native_chunk(done=True), "_debug_info": info})
    assert reply["_debug_info"] == info
    assert oai.from_completion_request({"_debug_render_only": True})["_debug_render_only"]


# --- chat replies ----------------------------------------------------------------------------

NATIVE_DONE = {"model": "m", "created_at": "2025-01-02T03:04:05.123456Z", "done": True,
               "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 3}


def native_chunk(content="", done=False, **message):
    out = {"model": "m", "created_at": "2025-01-02T03:04:05Z",
           "message": {"role": "assistant", "content": content, **message}, "done": done}
    return {**NATIVE_DONE, **out} if done else out


def test_chat_completion():
    r = oai.to_chat_completion("chatcmpl-1", {**native_chunk("Hello", done=True)})
    assert r == {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1735787045, "model": "m",
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def test_chat_completion_tool_calls_and_reasoning():
    native = native_chunk("", done=True, thinking="hmm", tool_calls=[
        {"id": "call_x", "function": {"index": 1, "name": "f", "arguments": {"a": "<b>"}}}])
    native["logprobs"] = [{"token": "x", "logprob": -0.5}]
    choice = oai.to_chat_completion("c", native)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning"] == "hmm"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_x", "index": 1, "type": "function",
         "function": {"name": "f", "arguments": '{"a":"\\u003cb\\u003e"}'}}]
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"a": "<b>"}
    assert choice["logprobs"] == {"content": [{"token": "x", "logprob": -0.5}]}


def test_tool_call_ids_are_generated_when_missing():
    call = oai.to_tool_calls([{"function": {"name": "f", "arguments": {}}}])[0]
    assert call["id"].startswith("call_") and len(call["id"]) == 13
    assert call["function"]["arguments"] == "{}"


def test_length_is_kept_with_tool_calls():
    native = native_chunk(done=True, tool_calls=[{"id": "c", "function": {"name": "f"}}])
    native["done_reason"] = "length"
    assert oai.to_chat_completion("c", native)["choices"][0]["finish_reason"] == "length"


def test_chat_stream_chunks():
    stream = oai.ChatStream("chatcmpl-7", include_usage=True)
    first = stream.feed(native_chunk("Hel"))
    second = stream.feed(native_chunk("lo"))
    last = stream.feed({**native_chunk("", done=True),
                        "created_at": "2030-01-01T00:00:00Z"})
    assert [c["choices"][0]["delta"] for c in first + second] == [
        {"role": "assistant", "content": "Hel"}, {"content": "lo"}]
    finish, usage = last  # the empty trailer is no content chunk
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 8
    chunks = first + second + last
    assert {c["created"] for c in chunks} == {1735787045}  # pinned to the first chunk
    assert {c["id"] for c in chunks} == {"chatcmpl-7"}
    assert all(c["object"] == "chat.completion.chunk" and
               c["system_fingerprint"] == "fp_ollama" and "usage" not in c
               for c in chunks[:-1])


def test_chat_stream_without_usage_and_empty_reply():
    stream = oai.ChatStream("c", include_usage=False)
    chunks = stream.feed(native_chunk("", done=True))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""},
                                                          {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_splits_thinking_from_content_and_marks_tool_calls():
    stream = oai.ChatStream("c", include_usage=False)
    think = stream.feed(native_chunk(thinking="plan"))
    mixed = stream.feed(native_chunk("ok", thinking="more"))
    native = native_chunk(tool_calls=[{"id": "k", "function": {"name": "f", "arguments": {}}}])
    native["logprobs"] = [{"token": "t", "logprob": -1.0}]
    calls = stream.feed(native)
    done = stream.feed(native_chunk(done=True))
    assert think[0]["choices"][0]["delta"] == {"role": "assistant", "content": "",
                                               "reasoning": "plan"}
    assert [c["choices"][0]["delta"] for c in mixed] == [{"reasoning": "more"},
                                                         {"content": "ok"}]
    delta = calls[0]["choices"][0]["delta"]
    assert delta["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert calls[0]["choices"][0]["logprobs"] == {"content": native["logprobs"]}
    assert done[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_stream_length_passes_through():
    stream = oai.ChatStream("c", include_usage=False)
    stream.feed(native_chunk("a"))
    final = {**native_chunk(done=True), "done_reason": "length"}
    assert stream.feed(final)[-1]["choices"][0]["finish_reason"] == "length"


# --- completions -----------------------------------------------------------------------------

def test_completion_request():
    native = oai.from_completion_request({"model": "m", "prompt": "p", "suffix": "s",
                                          "max_tokens": 4, "stop": ["x"], "seed": 2,
                                          "logprobs": 2, "stream": True})
    assert native == {"model": "m", "prompt": "p", "suffix": "s", "stream": True,
                      "logprobs": True, "top_logprobs": 2,
                      "options": {"stop": ["x"], "num_predict": 4, "temperature": 1.0,
                                  "seed": 2, "frequency_penalty": 0.0,
                                  "presence_penalty": 0.0, "top_p": 1.0}}
    assert oai.from_completion_request({"model": "m", "top_p": 0})["options"]["top_p"] == 1.0
    assert bad(oai.from_completion_request, {"stop": ["a", 1]}) == \
        "invalid type for 'stop' field: float64"


def test_completion_reply_and_chunks():
    native = {"model": "m", "created_at": "2025-01-02T03:04:05Z", "response": "Paris",
              "done": True, "done_reason": "stop", "prompt_eval_count": 4, "eval_count": 2}
    r = oai.to_completion("cmpl-3", native)
    assert r["object"] == "text_completion" and r["system_fingerprint"] == "fp_ollama"
    assert r["choices"] == [{"text": "Paris", "index": 0, "finish_reason": "stop"}]
    assert r["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    partial = oai.completion_chunks("c", {"model": "m", "response": "Pa", "done": False}, True)
    assert partial[0]["choices"][0]["finish_reason"] is None
    assert partial[0]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    final = oai.completion_chunks("c", native, True)
    assert final[1]["choices"] == [] and final[1]["usage"]["total_tokens"] == 6
    assert "usage" not in oai.completion_chunks("c", native, False)[0]


def test_completion_logprobs_legacy_shape():
    entries = [{"token": "Pa", "logprob": -0.1, "top_logprobs": [{"token": "Pa", "logprob": -0.1},
                                                                {"token": "Lo", "logprob": -2.0}]},
               {"token": "ris", "logprob": -0.2}]
    assert oai.completion_logprobs(entries) == {
        "tokens": ["Pa", "ris"], "token_logprobs": [-0.1, -0.2],
        "top_logprobs": [{"Pa": -0.1, "Lo": -2.0}, {}], "text_offset": [0, 2]}


# --- embeddings and models -------------------------------------------------------------------

def test_embed_request():
    assert oai.from_embed_request({"model": "e", "input": ""}) == (
        {"model": "e", "input": [""]}, "")
    assert oai.from_embed_request({"model": "e", "input": ["a"], "dimensions": 8,
                                   "encoding_format": "BASE64"}) == (
        {"model": "e", "input": ["a"], "dimensions": 8}, "base64")
    assert bad(oai.from_embed_request, {"model": "e"}) == "invalid input"
    assert bad(oai.from_embed_request, {"model": "e", "input": []}) == "invalid input"
    assert bad(oai.from_embed_request, {"model": "e", "input": "a", "encoding_format": "int8"}) \
        == "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."


def test_embedding_list_float_and_base64():
    native = {"embeddings": [[0.5, -0.25], [1.0, 0.0]], "prompt_eval_count": 6}
    floats = oai.to_embedding_list("e", native, "float")
    assert floats == {"object": "list", "model": "e",
                      "data": [{"object": "embedding", "embedding": [0.5, -0.25], "index": 0},
                               {"object": "embedding", "embedding": [1.0, 0.0], "index": 1}],
                      "usage": {"prompt_tokens": 6, "total_tokens": 6}}
    encoded = oai.to_embedding_list("e", native, "base64")["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -0.25)


def test_models():
    tags = {"models": [{"name": "a:latest", "model": "a:latest",
                        "modified_at": "2024-05-01T10:00:00.5+02:00"},
                       {"name": "me/b:1", "model": "me/b:1",
                        "modified_at": "2024-05-01T08:00:00Z"}]}
    assert oai.to_model_list(tags) == {"object": "list", "data": [
        {"id": "a:latest", "object": "model", "created": 1714550400, "owned_by": "library"},
        {"id": "me/b:1", "object": "model", "created": 1714550400, "owned_by": "me"}]}
    assert oai.to_model_list({"models": []}) == {"object": "list", "data": None}


def test_error_body():
    assert oai.error_body(400, "bad") == {"error": {"message": "bad", "type":
                                                    "invalid_request_error", "param": None,
                                                    "code": None}}
    assert oai.error_body(404, "x")["error"]["type"] == "not_found_error"
    assert oai.error_body(503, "x")["error"]["type"] == "api_error"
