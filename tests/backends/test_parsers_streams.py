"""Recorded outputs of several template families through ChatOutputParser, fed with a chunk
boundary at every split point and one character at a time: the same thinking, content and
tool calls every way, no tag text in any content delta, call indexes counting up."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends.parsers import ChatOutputParser, ParsedDelta
from backends.templates import PromptTemplate, Values

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def template(name: str) -> PromptTemplate:
    path = FIXTURES / name if name.endswith("gemma3_tools.gotmpl") else FIXTURES / "templates" / name
    return PromptTemplate.parse(path.read_text())


def tool(name: str, *params: str) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": f"{name} tool",
        "parameters": {"type": "object", "required": list(params),
                       "properties": {p: {"type": "string"} for p in params}}}}


TOOLS = [tool("get_weather", "city"), tool("get_time", "tz"), tool("get_weather_forecast", "city")]
WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"tz": "CET"}}'


@dataclass
class Case:
    id: str
    template: str
    output: str
    thinking: str = ""
    content: str = ""
    calls: tuple = ()
    tools: bool = True
    think: bool | str | None = None
    tags: tuple = ("<tool_call>", "</tool_call>", "<think>", "</think>", "[TOOL_CALLS]",
                   "<|python_tag|>", "<|eom_id|>", "</s>")


CASES = [
    Case("qwen2.5 two calls", "qwen25.gotmpl",
         f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{TIME}\n</tool_call>",
         calls=(("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"}))),
    Case("qwen2.5 text then call", "qwen25.gotmpl",
         f"Let me check the weather.\n<tool_call>\n{WEATHER}\n</tool_call>",
         content="Let me check the weather.\n", calls=(("get_weather", {"city": "Paris"}),)),
    Case("qwen2.5 plain answer", "qwen25.gotmpl", "Paris is sunny <b>today</b>, 20 C.",
         content="Paris is sunny <b>today</b>, 20 C."),
    Case("qwen2.5 without tools", "qwen25.gotmpl", f"<tool_call>\n{WEATHER}\n</tool_call>",
         content=f"<tool_call>\n{WEATHER}\n</tool_call>", tools=False, tags=()),
    Case("qwen2.5 longer name", "qwen25.gotmpl",
         '<tool_call>\n{"name": "get_weather_forecast", "arguments": {"city": "Oslo"}}\n</tool_call>',
         calls=(("get_weather_forecast", {"city": "Oslo"}),)),
    Case("qwen2.5 malformed json", "qwen25.gotmpl",
         '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',
         content='{"name": "get_weather", "arguments": {"city": "Paris"}'),
    Case("qwen2.5 arguments as a string", "qwen25.gotmpl",
         '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n</tool_call>',
         calls=(("get_weather", {"city": "Paris"}),)),
    Case("llama3.1 bare json", "llama31.gotmpl",
         '{"name": "get_weather", "parameters": {"city": "Paris"}}',
         calls=(("get_weather", {"city": "Paris"}),)),
    Case("llama3.1 answer", "llama31.gotmpl", "The weather in Paris is {mild}.",
         content="The weather in Paris is {mild}."),
    Case("llama3.1 json that is no call", "llama31.gotmpl", '{"city": "Paris", "temp": 20}\nDone.',
         content='{"city": "Paris", "temp": 20}\nDone.'),
    Case("llama3.1 python tag", "llama31_python_tag.gotmpl",
         '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
         calls=(("get_weather", {"city": "Paris"}),)),
    Case("mistral list", "mistral.gotmpl",
         f'[TOOL_CALLS][{WEATHER}, {{"name": "get_time", "arguments": {{}}}}]</s>',
         calls=(("get_weather", {"city": "Paris"}), ("get_time", {}))),
    Case("mistral text", "mistral.gotmpl", "Bonjour! [1] is a citation.",
         content="Bonjour! [1] is a citation."),
    Case("bare list", "json_list.gotmpl",
         f'[{{"function": {{"name": "get_time", "arguments": {{"tz": "UTC"}}}}}}, {WEATHER}]',
         calls=(("get_time", {"tz": "UTC"}), ("get_weather", {"city": "Paris"}))),
    Case("bare list not first", "json_list.gotmpl", "Answer: [1, 2]", content="Answer: [1, 2]"),
    Case("deepseek-r1 prompt opens the thinking", "deepseek_r1.gotmpl",
         "Okay, the user asks about Paris.\nI know this.\n</think>\n\nParis is the capital of France.",
         thinking="Okay, the user asks about Paris.\nI know this.\n",
         content="Paris is the capital of France.", tools=False, think=True),
    Case("deepseek-r1 unterminated thinking", "deepseek_r1.gotmpl", "Hmm, let me see </thin",
         thinking="Hmm, let me see </thin", tools=False, think=True),
    Case("qwen3 thinking then call", "qwen3.gotmpl",
         f"<think>\nThe user wants weather. I should call get_weather.\n</think>\n\n"
         f"<tool_call>\n{WEATHER}\n</tool_call>",
         thinking="The user wants weather. I should call get_weather.\n",
         calls=(("get_weather", {"city": "Paris"}),), think="high"),
    Case("qwen3 thinking then answer", "qwen3.gotmpl",
         "<think>Short.</think>It is 20 C <tool in Paris.", thinking="Short.",
         content="It is 20 C <tool in Paris.", think=True),
    Case("qwen3 think off", "qwen3.gotmpl", "<think>x</think>Hi", content="<think>x</think>Hi",
         tools=False, think=False, tags=()),
    Case("gemma3 fixture", "gemma3_tools.gotmpl",
         f"<think>Need the weather tool.</think>\n<tool_call>\n{WEATHER}\n</tool_call>\n"
         f"<tool_call>\n{TIME}\n</tool_call>",
         thinking="Need the weather tool.",
         calls=(("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})), think=True),
    Case("gemma3 fixture plain", "gemma3_tools.gotmpl", "Hello there!", content="Hello there!",
         think=True),
]


@functools.lru_cache(maxsize=None)
def rendered(name: str, tools: bool, think: bool | str | None) -> tuple[PromptTemplate, str]:
    tmpl = template(name)
    return tmpl, tmpl.execute(Values.with_think(
        think, messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS if tools else None))


def parser_for(case: Case) -> ChatOutputParser:
    tmpl, prompt = rendered(case.template, case.tools, case.think)
    return ChatOutputParser(tmpl, TOOLS if case.tools else None, case.think, prompt)


def run(case: Case, chunks: list[str]) -> tuple[str, str, tuple]:
    p = parser_for(case)
    deltas = [p.add(c) for c in chunks] + [p.finish()]
    for d in deltas:
        assert isinstance(d, ParsedDelta)
        for tag in case.tags:
            assert tag not in d.content, (tag, d)
    calls = [c for d in deltas for c in d.tool_calls]
    assert [c.index for c in calls] == list(range(len(calls)))
    return ("".join(d.thinking for d in deltas), "".join(d.content for d in deltas),
            tuple((c.name, c.arguments) for c in calls))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_chunking_gives_the_same_result(case: Case) -> None:
    want = (case.thinking, case.content, case.calls)
    assert run(case, [case.output]) == want
    assert run(case, list(case.output)) == want
    for i in range(len(case.output) + 1):
        assert run(case, [case.output[:i], case.output[i:]]) == want, i
    step = 3
    assert run(case, [case.output[i:i + step] for i in range(0, len(case.output), step)]) == want


def test_streaming_emits_as_soon_as_certain() -> None:
    case = CASES[1]
    p = parser_for(case)
    assert p.add("Let me").content == "Let me"
    assert p.add(" check <tool").content == " check "
    assert not p.add("_call>\n" + WEATHER[:20])
    d = p.add(WEATHER[20:] + "\n</tool_call>")
    assert d.content == "" and [c.name for c in d.tool_calls] == ["get_weather"]
    assert not p.finish()


def test_message_form() -> None:
    p = parser_for(CASES[17])
    deltas = [p.add(c) for c in CASES[17].output] + [p.finish()]
    msgs = [d.message() for d in deltas if d]
    assert msgs[0] == {"role": "assistant", "content": "", "thinking": "T"}
    call_msgs = [m for m in msgs if "tool_calls" in m]
    assert len(call_msgs) == 1 and call_msgs[0]["content"] == ""
    wire = call_msgs[0]["tool_calls"][0]
    assert wire["id"].startswith("call_") and len(wire["id"]) == 13
    assert wire["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}


def test_passthrough_without_tools_or_thinking() -> None:
    p = ChatOutputParser(template("qwen25.gotmpl"), None, None, "")
    assert p.passthrough and p.add("<tool_call>").content == "<tool_call>"
    p = ChatOutputParser(None, None, True, "")
    assert p.passthrough
    p = ChatOutputParser(None, TOOLS, None, "")  # no template: JSON at the start of the output
    assert p.tools is not None and p.tools.tag == "{"
