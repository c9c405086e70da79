"""The Go-template tool-call parser: the tag taken from a template (Ollama's tools.parseTag
table), call extraction (tools.Parser cases) and the native wire form of a call."""

from __future__ import annotations

import json
import re

import pytest

from backends.parsers import ToolCall, ToolCallParser, tool_call_id, tool_call_tag
from backends.templates import PromptTemplate

TAG_CASES = [
    ("empty", "", "{"),
    ("no tag", "{{if .ToolCalls}}{{end}}", "{"),
    ("no tag with range", "{{if .ToolCalls}}{{range .ToolCalls}}{{ . }}{{end}}{{end}}", "{"),
    ("json fence", "{{if .ToolCalls}}```json\n{{end}}", "```json"),
    ("square brackets", "{{if .ToolCalls}}[{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("square brackets with whitespace",
     "{{if .ToolCalls}}\n [ {{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("trailing ]", "{{if .ToolCalls}}{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "{"),
    ("whitespace only", "{{if .ToolCalls}} {{range .ToolCalls}}{{ . }}{{end}}{{end}}", "{"),
    ("whitespace only in range", "{{if .ToolCalls}}{{range .ToolCalls}}\n{{ . }}\n{{end}}{{end}}", "{"),
    ("json objects", '{{if .ToolCalls}}{{range .ToolCalls}}{"name": "{{ .Function.Name }}", '
     '"arguments": {{ .Function.Arguments }}}{{end}}{{end}}', "{"),
    ("json objects with CRLF", '{{if .ToolCalls}}{{range .ToolCalls}}\r\n{"name": '
     '"{{ .Function.Name }}"}{{end}}{{end}}', "{"),
    ("before and after range", "{{if .ToolCalls}}<|tool▁calls▁begin|>{{range .ToolCalls}}"
     "<|tool▁call▁begin|>x{{end}}<|tool▁calls▁end|>{{end}}", "<|tool▁calls▁begin|>"),
    ("inside range", '{{if .ToolCalls}}{{range .ToolCalls}}<tool_call>{"name": '
     '"{{ .Function.Name }}"}</tool_call>{{end}}{{end}}', "<tool_call>"),
    ("inside range after newline", '{{if .ToolCalls}}\n{{range .ToolCalls}}<tool_call>{"name": '
     '"{{ .Function.Name }}"}</tool_call>{{end}}{{end}}', "<tool_call>"),
    ("multiple text nodes", "{{if .ToolCalls}}First text{{if .Something}}inner{{end}}Second{{end}}",
     "First text"),
    ("action tag", "{{if .ToolCalls}}Action: ```json{{end}}", "Action: ```json"),
    ("incomplete bracket", "{{if .ToolCalls}}functools[{{end}}", "functools["),
    ("upper case with bracket", "{{if .ToolCalls}}[TOOL_CALL] [{{end}}", "[TOOL_CALL] ["),
    ("else if", '{{ range .Messages }}{{ if .Content }}{{ .Content }}{{ else if .ToolCalls }}'
     '<tool_call>\n{{ range .ToolCalls }}{}{{ end }}</tool_call>{{ end }}{{ end }}', "<tool_call>"),
    ("condition with and", "{{ if and .ToolCalls .Content }}<|python_tag|>{{ end }}", "<|python_tag|>"),
]


@pytest.mark.parametrize("template,want", [c[1:] for c in TAG_CASES], ids=[c[0] for c in TAG_CASES])
def test_tool_call_tag(template: str, want: str) -> None:
    assert tool_call_tag(template) == want
    if template:
        assert tool_call_tag(PromptTemplate.parse(template)) == want


def tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": name,
                                             "parameters": {"type": "object", "properties": {}}}}


TOOLS = [tool(n) for n in ("get_temperature", "get_conditions", "say_hello", "say_hello_world",
                           "get_address", "add")]


def run(tag: str, chunks: list[str], tools: list[dict] = TOOLS) -> tuple[str, list[tuple]]:
    p = ToolCallParser(tag, tools)
    content, calls = [], []
    for c in chunks:
        text, got = p.add(c)
        content.append(text)
        calls += got
    text, got = p.finish()
    content.append(text)
    calls += got
    return "".join(content), [(c.index, c.name, c.arguments) for c in calls]


CALL_CASES = [
    ("plain text", "<tool_call>", "Hello, how can I help you today?",
     "Hello, how can I help you today?", []),
    ("empty", "<tool_call>", "", "", []),
    ("one call", "<tool_call>",
     '<tool_call>{"name": "get_conditions", "arguments": {"location": "San Francisco"}}</tool_call>',
     "", [(0, "get_conditions", {"location": "San Francisco"})]),
    ("empty args", "<tool_call>", '<tool_call>{"name": "get_conditions", "arguments": {}}</tool_call>',
     "", [(0, "get_conditions", {})]),
    ("no args key", "<tool_call>", '<tool_call>{"name": "say_hello"}</tool_call>', "",
     [(0, "say_hello", {})]),
    ("text before", "<tool_call>", 'Let me check. <tool_call>{"name": "get_temperature", '
     '"arguments": {"city": "New York"}}</tool_call>', "Let me check. ",
     [(0, "get_temperature", {"city": "New York"})]),
    ("name mentioned in text", "<tool_call>", "I'll use the say_hello tool. ",
     "I'll use the say_hello tool. ", []),
    ("mistral list", "[TOOL_CALLS] [", '[TOOL_CALLS] [{"name": "get_temperature", "arguments": '
     '{"city": "London", "format": "fahrenheit"}}, {"name": "get_conditions", "arguments": '
     '{"location": "Tokyo"}}][/TOOL_CALLS]', "",
     [(0, "get_temperature", {"city": "London", "format": "fahrenheit"}),
      (1, "get_conditions", {"location": "Tokyo"})]),
    ("longest name wins", "<tool_call>", '<tool_call>{"name": "say_hello_world", "arguments": {}}'
     '</tool_call><tool_call>{"name": "say_hello", "arguments": {}}</tool_call>', "",
     [(0, "say_hello_world", {}), (1, "say_hello", {})]),
    ("parameters key", "{", '{"name": "add", "parameters": {"a": "1", "b": "2"}}', "",
     [(0, "add", {"a": "1", "b": "2"})]),
    ("arguments as a JSON string", "<tool_call>", '<tool_call>{"name": "add", "arguments": '
     '"{\\"a\\": \\"1\\", \\"b\\": \\"2\\"}"}</tool_call>', "", [(0, "add", {"a": "1", "b": "2"})]),
    ("function wrapper", "{", '{"function": {"name": "get_address", "arguments": {"location": '
     '"Paris"}}}', "", [(0, "get_address", {"location": "Paris"})]),
    ("keyed by tool name", "{", '{"get_address": {"location": "Paris"}}', "",
     [(0, "get_address", {"location": "Paris"})]),
    ("bare args object", "<|tool▁calls▁begin|>", '<|tool▁calls▁begin|><|tool▁call▁begin|>function'
     '<|tool▁sep|>get_temperature\n```json\n{"city": "Tokyo"}\n```<|tool▁call▁end|>'
     '<|tool▁calls▁end|>', "", [(0, "get_temperature", {"city": "Tokyo"})]),
    ("bare json not first", "{", 'Sure: {"name": "add", "arguments": {}}',
     'Sure: {"name": "add", "arguments": {}}', []),
    ("bare json that is no call", "{", '{"answer": 42} and more', '{"answer": 42} and more', []),
    ("bare json leading whitespace", "{", '\n {"name": "add", "arguments": {"a": "1"}}', "\n ",
     [(0, "add", {"a": "1"})]),
    ("bare list", "[", '[{"name": "add", "arguments": {"a": "1"}}, {"name": "say_hello", '
     '"arguments": {}}]', "", [(0, "add", {"a": "1"}), (1, "say_hello", {})]),
    ("unknown tool is content", "<tool_call>", 'Hi <tool_call>{"name": "launch", "arguments": {}}'
     '</tool_call>', 'Hi {"name": "launch", "arguments": {}}', []),
    ("malformed json is content", "<tool_call>", '<tool_call>{"name": "add", "arguments": '
     '{"a": }}</tool_call>', '{"name": "add", "arguments": {"a": }}', []),
    ("unterminated bare json is content", "{", '{"name": "add", "arguments": {"a": "1"}',
     '{"name": "add", "arguments": {"a": "1"}', []),
    ("nan is not json", "<tool_call>", '<tool_call>{"name": "add", "arguments": {"a": NaN}}',
     '{"name": "add", "arguments": {"a": NaN}}', []),
    ("braces inside strings", "<tool_call>", '<tool_call>{"name": "add", "arguments": '
     '{"a": "}{\\"}", "b": "x"}}</tool_call>', "", [(0, "add", {"a": '}{"}', "b": "x"})]),
    ("partial tag at the end is text", "<tool_call>", "Done <tool_", "Done <tool_", []),
]


@pytest.mark.parametrize("tag,output,content,calls", [c[1:] for c in CALL_CASES],
                         ids=[c[0] for c in CALL_CASES])
def test_tool_call_parser(tag: str, output: str, content: str, calls: list[tuple]) -> None:
    assert run(tag, [output]) == (content, calls)
    assert run(tag, list(output)) == (content, calls)
    for i in range(len(output) + 1):
        assert run(tag, [output[:i], output[i:]]) == (content, calls), i


def test_content_before_a_tag_streams_and_a_partial_tag_is_held() -> None:
    p = ToolCallParser("<tool_call>", TOOLS)
    assert p.add("Let me look") == ("Let me look", [])
    assert p.add(" <tool") == (" ", [])
    assert p.add("_call>\n{\"name\": \"add\", ") == ("", [])
    content, calls = p.add('"arguments": {"a": "1"}}\n</tool_call>')
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("add", {"a": "1"})]
    assert p.finish() == ("", [])


def test_waits_for_a_longer_name() -> None:
    p = ToolCallParser("{", TOOLS)
    assert p.add('{"name": "say_hello') == ("", [])
    content, calls = p.add('_world", "arguments": {}}')
    assert [c.name for c in calls] == ["say_hello_world"]


def test_arguments_keep_their_order() -> None:
    _, calls = run("{", ['{"name": "add", "arguments": {"z": 1, "a": {"y": 2, "b": [3]}, "m": null}}'])
    assert list(calls[0][2]) == ["z", "a", "m"] and list(calls[0][2]["a"]) == ["y", "b"]


def test_wire_form() -> None:
    call = ToolCall(name="add", arguments={"b": 2, "a": 1}, index=0)
    wire = call.to_wire()
    assert re.fullmatch(r"call_[a-z0-9]{8}", wire["id"])
    assert wire["function"] == {"index": 0, "name": "add", "arguments": {"b": 2, "a": 1}}
    assert json.dumps(wire["function"]) == '{"index": 0, "name": "add", "arguments": {"b": 2, "a": 1}}'
    assert ToolCall(name="x", arguments={}, index=3).to_wire()["function"]["index"] == 3
    assert len({tool_call_id() for _ in range(50)}) == 50


def test_tools_as_objects() -> None:
    class Fn:
        name = "add"

    class Tool:
        function = Fn()

    assert run("{", ['{"name": "add", "arguments": {}}'], [Tool()]) == ("", [(0, "add", {})])
