"""The official `openai` client with tools and `response_format` json_schema on /v1."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

from tests.integration.test_structured import TOOL_SCHEMA as TOOL_CALL_SCHEMA

pytestmark = pytest.mark.slow

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "The city"}}}}}]


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused")


@pytest.fixture(scope="module")
def json_tools_model(client, live_server):
    """gemma3:270m with a template whose tool-call tag is a bare `{` (JSON at the start)."""
    import httpx

    template = (Path(__file__).parents[1] / "fixtures" / "gemma3_json_tools.gotmpl").read_text()
    r = httpx.post(live_server.url + "/api/create", timeout=120, json={
        "model": "oa-json-tools", "from": "gemma3:270m", "template": template, "stream": False})
    assert r.json() == {"status": "success"}
    return "oa-json-tools"


def _schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def test_response_format_json_schema(client):
    for stream in (False, True):
        kwargs = dict(model="gemma3:270m", temperature=0, max_tokens=48,
                      messages=[{"role": "user", "content": "Name a city and its country."}],
                      response_format=_schema_format("city", City.model_json_schema()))
        if stream:
            text = "".join(c.choices[0].delta.content or ""
                           for c in client.chat.completions.create(stream=True, **kwargs)
                           if c.choices)
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        City.model_validate_json(text)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_have_string_arguments(client, json_tools_model, stream):
    kwargs = dict(model=json_tools_model, temperature=0, max_tokens=48, tools=TOOLS,
                  messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                  response_format=_schema_format("call", TOOL_CALL_SCHEMA))
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
    else:
        choice = client.chat.completions.create(**kwargs).choices[0]
        calls, finish = choice.message.tool_calls or [], choice.finish_reason
    assert finish == "tool_calls" and len(calls) == 1
    call = calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(call.function.arguments, str)
    assert isinstance(json.loads(call.function.arguments)["city"], str)
