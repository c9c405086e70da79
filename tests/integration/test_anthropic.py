"""`/v1/messages` through the official `anthropic` SDK against the live server."""

from __future__ import annotations

import anthropic
import httpx
import pytest

pytestmark = pytest.mark.slow

MODEL = "gemma3:270m"
MESSAGES = [{"role": "user", "content": "Name a color."}]
# anthropic 2.x no longer takes sampling parameters as arguments; the server still reads them.
GREEDY = {"temperature": 0, "top_k": 1}


@pytest.fixture
def client(live_server):
    return anthropic.Anthropic(base_url=live_server.url, api_key="x", max_retries=0)


def test_message(client):
    r = client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES,
                               system="Answer briefly.", extra_body=GREEDY)
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.model == MODEL and r.content[0].type == "text" and r.content[0].text
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 8


def test_stream_text_and_final_message(client):
    whole = client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES,
                                   extra_body=GREEDY)
    with client.messages.stream(model=MODEL, max_tokens=8, messages=MESSAGES,
                                extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text  # greedy: same text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_stream_event_order(live_server):
    body = {"model": MODEL, "max_tokens": 4, "messages": MESSAGES, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/messages", json=body, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in r.read().decode().split("\n\n") if f]
    kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    assert '"stop_reason":"max_tokens"' in frames[-2]


def test_thinking_relaxed_and_stop_sequences(client):
    r = client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES, extra_body=GREEDY,
                               thinking={"type": "enabled", "budget_tokens": 1024},
                               stop_sequences=["\n"])
    assert r.content and all(b.type == "text" for b in r.content)  # not a thinking model
    assert "\n" not in r.content[0].text


def test_errors_map_to_sdk_exceptions(client):
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="no-such-model", max_tokens=8, messages=MESSAGES)
    assert err.value.status_code == 404
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=0, messages=MESSAGES)
    assert err.value.body["error"]["message"] == "max_tokens is required and must be positive"
