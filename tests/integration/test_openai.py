"""`/v1` through the official `openai` SDK against the live server's embedded models."""

from __future__ import annotations

import math
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

CHAT = "gemma3:270m"
EMBED = "all-minilm"
MESSAGES = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Name a color."}]


@pytest.fixture
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="x", max_retries=0)


def test_chat_completion(client):
    r = client.chat.completions.create(model=CHAT, messages=MESSAGES, temperature=0,
                                       max_tokens=8)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.system_fingerprint == "fp_ollama" and r.model == CHAT and r.created > 0
    choice = r.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_with_usage_matches_non_stream(client):
    kwargs = dict(model=CHAT, messages=MESSAGES, temperature=0, max_tokens=8)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage.completion_tokens == whole.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: same text


def test_chat_stream_without_usage_ends_with_done(live_server):
    body = {"model": CHAT, "messages": MESSAGES, "temperature": 0, "max_tokens": 3,
            "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body,
                      timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in r.read().decode().split("\n\n") if f]
    assert frames[-1] == "data: [DONE]" and all(f.startswith("data: ") for f in frames)
    assert '"usage"' not in "".join(frames) and '"finish_reason":"length"' in frames[-2]


def test_max_completion_tokens_and_stop(client):
    r = client.chat.completions.create(model=CHAT, messages=MESSAGES, temperature=0,
                                       max_completion_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model=CHAT, messages=MESSAGES, temperature=0,
                                       max_tokens=8, stop=["\n"], seed=1,
                                       frequency_penalty=0.1, presence_penalty=0.1)
    assert "\n" not in r.choices[0].message.content


def test_completions(client):
    r = client.completions.create(model=CHAT, prompt="The capital of France is",
                                  temperature=0, max_tokens=6)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    chunks = list(client.completions.create(
        model=CHAT, prompt="The capital of France is", temperature=0, max_tokens=6,
        stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == \
        r.usage.completion_tokens


def _native_embeddings(live_server, texts):
    r = httpx.post(live_server.url + "/api/embed", json={"model": EMBED, "input": texts},
                   timeout=120)
    return r.json()["embeddings"]


def test_embeddings_default_base64_and_float(client, live_server):
    texts = ["The cat sits on the mat.", "Stock markets fell sharply."]
    native = _native_embeddings(live_server, texts)
    default = client.embeddings.create(model=EMBED, input=texts)  # the SDK asks for base64
    floats = client.embeddings.create(model=EMBED, input=texts, encoding_format="float")
    for r in (default, floats):
        assert r.object == "list" and r.model == EMBED and len(r.data) == 2
        assert [d.index for d in r.data] == [0, 1] and r.usage.prompt_tokens > 0
        for got, want in zip(r.data, native):
            assert len(got.embedding) == 384
            assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got.embedding, want))
    one = client.embeddings.create(model=EMBED, input="hello", dimensions=64,
                                   encoding_format="float")
    vec = one.data[0].embedding
    assert len(vec) == 64 and math.isclose(sum(x * x for x in vec), 1.0, rel_tol=1e-4)


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert CHAT in ids and "all-minilm:latest" in ids
    m = client.models.retrieve(CHAT)
    assert m.id == CHAT and m.object == "model" and m.owned_by == "library" and m.created > 0


def test_errors_map_to_sdk_exceptions(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert err.value.status_code == 404
    assert err.value.body["type"] == "not_found_error"
    assert "no-such-model" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT, messages=[])
    assert err.value.body["message"] == "[] is too short - 'messages'"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, reasoning_effort="huge")
    assert err.value.body["message"].startswith("invalid reasoning value")


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def test_stream_disconnect_aborts_the_sequence(client, live_server):
    stream = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=400,
                                            stream=True, extra_body={"seed": 1})
    next(iter(stream))
    stream.close()
    for _ in range(100):  # the abort lands within a step or two
        metrics = httpx.get(live_server.url + "/metrics").text
        if _metric(metrics, "vllm:num_requests_running") == 0 and \
                _metric(metrics, "corral_model_requests_in_flight") == 0:
            break
        time.sleep(0.2)
    assert _metric(metrics, "vllm:num_requests_running") == 0
    assert _metric(metrics, "corral_model_requests_in_flight") == 0
    assert _metric(metrics, "corral_kv_blocks_free") == _metric(metrics, "corral_kv_blocks_total")
