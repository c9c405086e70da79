"""A model created FROM gemma3:270m with a TEMPLATE that supports tools and thinking."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

TEMPLATE = (Path(__file__).parents[1] / "fixtures" / "gemma3_tools.gotmpl").read_text()
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "City <name>"}}}}}]


@pytest.fixture(scope="module")
def tools_model(live_server):
    r = httpx.post(live_server.url + "/api/create", timeout=120, json={
        "model": "gemma-tools", "from": "gemma3:270m", "template": TEMPLATE, "stream": False})
    assert r.json() == {"status": "success"}
    yield "gemma-tools"
    httpx.request("DELETE", live_server.url + "/api/delete", json={"model": "gemma-tools"})


def test_capabilities_come_from_the_template(ollama_client, tools_model):
    caps = ollama_client.show(tools_model).capabilities
    assert {"completion", "tools", "thinking"} <= set(caps)


def test_tools_and_tool_results_render_through_the_template(live_server, tools_model):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18C and sunny", "tool_name": "get_weather"},
    ]
    r = httpx.post(live_server.url + "/api/chat", timeout=120, json={
        "model": tools_model, "messages": messages, "tools": TOOLS, "think": True,
        "_debug_render_only": True}).json()
    rendered = r["_debug_info"]["rendered_template"]
    assert '"name":"get_weather"' in rendered and "City \\u003cname\\u003e" in rendered
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris"}}' in rendered
    assert "<tool_response>\n18C and sunny\n</tool_response>" in rendered
    assert "Think first" in rendered and rendered.endswith("<start_of_turn>model\n")


def test_a_thinking_model_thinks_by_default_and_accepts_think_false(ollama_client, tools_model):
    opts = {"temperature": 0, "num_predict": 6}
    on = ollama_client.chat(model=tools_model, messages=[{"role": "user", "content": "Hi"}],
                            options=opts)
    off = ollama_client.chat(model=tools_model, messages=[{"role": "user", "content": "Hi"}],
                             options=opts, think=False)
    assert on.done and off.done
    assert on.eval_count == off.eval_count == 6
    # the base model writes no <think> tags: everything it says is content
    assert (on.message.thinking or "") == "" and on.message.content


def test_tools_run_end_to_end_without_a_call(ollama_client, tools_model):
    def get_weather(city: str) -> str:
        """Weather for a city.

        Args:
          city: the city
        """
        return "sunny"

    r = ollama_client.chat(model=tools_model, tools=[get_weather], think=False,
                           messages=[{"role": "user", "content": "Weather in Paris?"}],
                           options={"temperature": 0, "num_predict": 8})
    assert r.done and r.message.role == "assistant"
    assert "<tool_call>" not in (r.message.content or "")
