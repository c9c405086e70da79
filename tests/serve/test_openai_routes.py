"""The /v1 and /v1/messages routes over a fake native chat handler: the rewritten body, SSE
framing, error mapping before and during a stream, and the native stream always closed."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from registry.errors import APIError
from serve.responses import stream_events
from serve.routes import generate
from serve.wire import decode_body

BASE = "http://127.0.0.1:11434"


class FakeChat:
    """Stands in for the native chat handler: records bodies, replays `events`."""

    def __init__(self, events=(), fail: APIError | None = None, error_after: int | None = None):
        self.events, self.fail, self.error_after = list(events), fail, error_after
        self.bodies: list[dict] = []
        self.closed = 0

    async def __call__(self, request):
        body = decode_body(await request.body(), "ChatRequest", {})
        self.bodies.append(body)
        if self.fail:
            raise self.fail

        async def events():
            try:
                for i, event in enumerate(self.events):
                    if i == self.error_after:
                        raise APIError(500, "runner crashed")
                    yield event
            finally:
                self.closed += 1

        def aggregate(chunks):
            text = "".join(c["message"]["content"] for c in chunks)
            return {**chunks[-1], "message": {"role": "assistant", "content": text}}

        return await stream_events(events(), body.get("stream") is not False, aggregate)


def chunk(text, done=False):
    out = {"model": "m", "created_at": "2025-01-02T03:04:05Z",
           "message": {"role": "assistant", "content": text}, "done": done}
    if done:
        out.update(done_reason="stop", prompt_eval_count=5, eval_count=2)
    return out


EVENTS = [chunk("Hel"), chunk("lo"), chunk("", done=True)]


@pytest.fixture
def fake(monkeypatch):
    def install(**kwargs):
        handler = FakeChat(**kwargs)
        monkeypatch.setattr(generate, "chat", handler)
        return handler
    return install


@pytest.fixture
def oai_client(app_client):
    return openai.OpenAI(base_url=BASE + "/v1", api_key="x", http_client=app_client,
                         max_retries=0)


@pytest.fixture
def anth_client(app_client):
    return anthropic.Anthropic(base_url=BASE, api_key="x", http_client=app_client,
                               max_retries=0)


def frames(response) -> list[str]:
    return [f for f in response.text.split("\n\n") if f]


def test_chat_body_rewritten_and_reply(fake, oai_client):
    handler = fake(events=EVENTS)
    r = oai_client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                 "content": "hi"}])
    assert r.choices[0].message.content == "Hello" and r.usage.total_tokens == 7
    assert handler.bodies == [{"model": "m", "messages": [{"role": "user", "content": "hi"}],
                               "options": {"temperature": 1.0, "top_p": 1.0},
                               "stream": False}]
    assert handler.closed == 1


def test_chat_stream_frames(fake, app_client):
    handler = fake(events=EVENTS)
    r = app_client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = frames(r)
    assert got[-1] == "data: [DONE]" and all(f.startswith("data: ") for f in got)
    payloads = [json.loads(f[6:]) for f in got[:-1]]
    assert [p["choices"][0]["delta"] if p["choices"] else None for p in payloads] == [
        {"role": "assistant", "content": "Hel"}, {"content": "lo"}, {}, None]
    assert payloads[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2,
                                     "total_tokens": 7}
    assert handler.closed == 1


def test_chat_stream_through_the_sdk(fake, oai_client):
    fake(events=EVENTS)
    stream = oai_client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == "Hello"


def test_error_before_the_stream_keeps_its_status(fake, oai_client, anth_client):
    fake(fail=APIError(400, '"m" does not support tools'))
    with pytest.raises(openai.BadRequestError) as err:
        oai_client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                 "content": "hi"}],
                                           stream=True)
    assert err.value.body == {"message": '"m" does not support tools',
                              "type": "invalid_request_error", "param": None, "code": None}
    fake(fail=APIError(503, "server busy"))
    with pytest.raises(anthropic.APIStatusError) as aerr:
        anth_client.messages.create(model="m", max_tokens=4,
                                    messages=[{"role": "user", "content": "hi"}])
    assert aerr.value.status_code == 503
    assert aerr.value.body["error"] == {"type": "overloaded_error", "message": "server busy"}


def test_unexpected_native_failure_is_api_error(monkeypatch, app_client):
    async def broken(request):
        raise RuntimeError("boom")
    monkeypatch.setattr(generate, "chat", broken)
    r = app_client.post("/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 500
    assert r.json()["error"] == {"message": "boom", "type": "api_error", "param": None,
                                 "code": None}


def test_mid_stream_error_raises_in_the_sdks(fake, oai_client, anth_client):
    handler = fake(events=EVENTS, error_after=1)
    stream = oai_client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError, match="runner crashed"):
        list(stream)
    with pytest.raises(anthropic.APIStatusError, match="runner crashed"):
        with anth_client.messages.stream(model="m", max_tokens=4,
                                         messages=[{"role": "user", "content": "hi"}]) as s:
            list(s.text_stream)
    assert handler.closed == 2


def test_bad_bodies(app_client):
    r = app_client.post("/v1/chat/completions", content=b"{")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = app_client.post("/v1/chat/completions", json={"model": 1, "messages": []})
    assert r.json()["error"]["message"].startswith("json: cannot unmarshal number into Go "
                                                   "struct field ChatCompletionRequest.model")
    r = app_client.post("/v1/completions", json={"model": "m", "prompt": ["a"]})
    assert r.status_code == 400 and "CompletionRequest.prompt" in r.json()["error"]["message"]
    r = app_client.post("/v1/messages", json={"model": "m", "max_tokens": 1,
                                              "messages": [{"role": "user", "content": 5}]})
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_anthropic_stream_frames(fake, app_client):
    handler = fake(events=EVENTS)
    r = app_client.post("/v1/messages", json={
        "model": "m", "max_tokens": 4, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]})
    assert r.headers["content-type"].startswith("text/event-stream")
    got = frames(r)
    kinds = [f.split("\n")[0] for f in got]
    assert kinds == ["event: message_start", "event: content_block_start", "event: ping",
                     "event: content_block_delta", "event: content_block_delta",
                     "event: content_block_stop", "event: message_delta", "event: message_stop"]
    assert all(f.split("\n")[1].startswith("data: {") for f in got)
    assert handler.bodies[0]["options"] == {"num_predict": 4}
    assert handler.closed == 1


def test_anthropic_sdk_message_and_stream(fake, anth_client):
    fake(events=EVENTS)
    r = anth_client.messages.create(model="m", max_tokens=4,
                                    messages=[{"role": "user", "content": "hi"}])
    assert r.content[0].text == "Hello" and r.stop_reason == "end_turn"
    with anth_client.messages.stream(model="m", max_tokens=4,
                                     messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == "Hello"
        final = s.get_final_message()
    assert final.usage.output_tokens == 2 and final.stop_reason == "end_turn"


class _Model:
    def __init__(self, caps):
        self.capabilities = caps


@pytest.mark.parametrize("caps,sent", [(["completion"], None),
                                       (["completion", "thinking"], True)])
def test_anthropic_relaxes_thinking(fake, anth_client, monkeypatch, caps, sent):
    from serve.routes import anthropic as route
    monkeypatch.setattr(route, "get_model", lambda store, name: _Model(caps))
    handler = fake(events=EVENTS)
    anth_client.messages.create(model="m", max_tokens=4, thinking={"type": "enabled",
                                                                   "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "hi"}])
    assert handler.bodies[0].get("think") == sent
