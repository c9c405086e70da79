"""`/v1/responses` through the official `openai` SDK's `responses` API (issue 15, item 5)."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.integration.test_openai_structured import City, json_tools_model  # noqa: F401
from tests.integration.test_structured import TOOL_SCHEMA

pytestmark = pytest.mark.slow

MODEL = "gemma3:270m"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Get the weather in a city.",
          "parameters": {"type": "object", "required": ["city"],
                         "properties": {"city": {"type": "string"}}}}]
MESSAGE_EVENTS = ["response.output_item.added", "response.content_part.added",
                  "response.output_text.delta", "response.output_text.done",
                  "response.content_part.done", "response.output_item.done"]


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


def test_text(client):
    r = client.responses.create(model=MODEL, input="Say hello.", instructions="Be brief.",
                                temperature=0, max_output_tokens=12)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.output_text and r.output_text == r.output[0].content[0].text
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 12
    assert r.status in ("completed", "incomplete"), r
    cut = client.responses.create(model=MODEL, input="Write a long story about a dragon.",
                                  temperature=0, max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


def test_streamed_events_in_openais_order(client):
    kwargs = dict(model=MODEL, input=[{"role": "user", "content": "Say hello."}],
                  temperature=0, max_output_tokens=24)
    events = list(client.responses.create(stream=True, **kwargs))
    kinds = [e.type for e in events]
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert collapsed[:2] == ["response.created", "response.in_progress"], kinds
    assert collapsed[2:-1] == MESSAGE_EVENTS, kinds
    assert collapsed[-1] == f"response.{events[-1].response.status}", kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text and final.output_text == text
    assert final.output_text == client.responses.create(**kwargs).output_text  # greedy


def test_structured_output_json_schema(client):
    for stream in (False, True):
        kwargs = dict(model=MODEL, input="Name a city and its country.", temperature=0,
                      max_output_tokens=48)
        if stream:
            with client.responses.stream(text_format=City, **kwargs) as events:
                # the SDK's own accumulator over our events (needs `response.completed`)
                parsed = events.get_final_response().output_parsed
        else:
            parsed = client.responses.parse(text_format=City, **kwargs).output_parsed
        assert isinstance(parsed, City) and parsed.name


class Call(BaseModel):
    name: str


@pytest.mark.parametrize("stream", [False, True])
def test_function_call_and_its_output(client, json_tools_model, stream):  # noqa: F811
    kwargs = dict(model=json_tools_model, input="What is the weather in Paris?", tools=TOOLS,
                  temperature=0, max_output_tokens=48,
                  text={"format": {"type": "json_schema", "name": "call",
                                   "schema": TOOL_SCHEMA}})
    if stream:
        events = list(client.responses.create(stream=True, **kwargs))
        kinds = [e.type for e in events]
        assert "response.function_call_arguments.done" in kinds, kinds
        r = events[-1].response
    else:
        r = client.responses.create(**kwargs)
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1, r.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.status == "completed"
    city = json.loads(call.arguments)["city"]
    follow = client.responses.create(
        model=json_tools_model, tools=TOOLS, temperature=0, max_output_tokens=16,
        input=[{"role": "user", "content": "What is the weather in Paris?"},
               {"type": "function_call", "call_id": call.call_id, "name": call.name,
                "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id,
                "output": json.dumps({"city": city, "weather": "sunny, 21 C"})}])
    assert follow.output[0].type == "message", follow.output


def test_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[{"type": "web_search_call", "id": "x"}])
