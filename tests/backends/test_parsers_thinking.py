"""Thinking tags inferred from templates (Ollama's thinking.InferTags) and the streaming
thinking parser (thinking.Parser), plus the registry's capability scan agreeing with both."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.parsers import ThinkingParser, infer_tags
from backends.templates import PromptTemplate
from registry.model_info import thinking_tags

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NAMED = Path(__file__).resolve().parents[2] / "registry" / "templates"

QWEN3_OLLAMA_TEST = """
{{- if or .System .Tools .Thinking }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Thinking }}
/think
{{- else }}
/no_think
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if and $last .Thinking }}
<think>{{ .Thinking }}</think>
{{ end }}
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- end }}
"""

INFER_CASES = [
    ("basic", """
        {{ if .Thinking}}
            /think
        {{ end }}
        {{- range $i, $_ := .Messages }}
            {{- $last := eq (len (slice $.Messages $i)) 1 -}}
            {{ if and $last .Thinking }}
                <think>{{ .Thinking }}</think>
            {{ end }}
        {{ end }}
    """, ("<think>", "</think>")),
    ("doubly nested range", """
        {{- range $i, $_ := .Messages }}
            {{- range $j, $_ := .NotMessages }}
                {{ if .Thinking }}
                    <think>{{ .Thinking }}</think>
                {{ end }}
            {{ end }}
        {{ end }}
    """, ("", "")),
    ("whitespace is trimmed", """
        {{- range $i, $_ := .Messages }}
            {{ if .Thinking }}
                Some text before   {{ .Thinking }}    Some text after
            {{ end }}
        {{ end }}
    """, ("Some text before", "Some text after")),
    ("qwen3", QWEN3_OLLAMA_TEST, ("<think>", "</think>")),
    ("outside messages", "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", ("", "")),
    ("think flag only", "{{ if .Think }}<think>{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}",
     ("", "")),
    ("variable is not a field", "{{ range $m := .Messages }}<t>{{ $m.Thinking }}</t>{{ end }}",
     ("", "")),
    ("else if chain", """{{ range .Messages }}{{ if eq .Role "user" }}U{{ else if eq .Role "x" }}X
{{ else if .Thinking }}<reasoning>{{ .Thinking }}</reasoning>{{ end }}{{ end }}""",
     ("<reasoning>", "</reasoning>")),
    ("trim markers", "{{- range .Messages }}  {{- if .Thinking -}} [T] {{- .Thinking -}} [/T] {{- end }}{{ end }}",
     ("[T]", "[/T]")),
]


@pytest.mark.parametrize("text,want", [(c[1], c[2]) for c in INFER_CASES],
                         ids=[c[0] for c in INFER_CASES])
def test_infer_tags(text: str, want: tuple[str, str]) -> None:
    assert infer_tags(text) == want
    assert infer_tags(PromptTemplate.parse(text)) == want
    assert thinking_tags(text) == want


def _all_templates() -> list[Path]:
    return sorted(NAMED.glob("*.gotmpl")) + sorted(FIXTURES.rglob("*.gotmpl"))


@pytest.mark.parametrize("path", _all_templates(), ids=lambda p: p.name)
def test_registry_scan_agrees_with_parse_tree(path: Path) -> None:
    text = path.read_text()
    assert thinking_tags(text) == infer_tags(PromptTemplate.parse(text))


def test_fixture_tags() -> None:
    for name in ("qwen3.gotmpl", "deepseek_r1.gotmpl"):
        assert infer_tags((FIXTURES / "templates" / name).read_text()) == ("<think>", "</think>")
    assert infer_tags((FIXTURES / "gemma3_tools.gotmpl").read_text()) == ("<think>", "</think>")
    assert infer_tags(None) == ("", "") and infer_tags("{{ broken") == ("", "")


def feed(parser: ThinkingParser, chunks: list[str]) -> tuple[str, str]:
    thinking, content = [], []
    for c in chunks:
        t, s = parser.add(c)
        thinking.append(t)
        content.append(s)
    t, s = parser.finish()
    return "".join(thinking) + t, "".join(content) + s


PARSER_CASES = [
    # (output, start_in_thinking, thinking, content)
    ("<think>abc</think>def", False, "abc", "def"),
    ("  \n<think>\n\n  abc\n</think>\n\n  def ghi", False, "abc\n", "def ghi"),
    ("no thinking here", False, "", "no thinking here"),
    ("  leading space kept", False, "", "  leading space kept"),
    ("abc</think>def", True, "abc", "def"),
    ("\nabc</think>\n\ndef", True, "abc", "def"),
    ("<think>unterminated", False, "unterminated", ""),
    ("<think>ends with </thi", False, "ends with </thi", ""),
    ("<thi", False, "", "<thi"),
    ("<think></think>", False, "", ""),
    ("<think>a</think>b</think>c", False, "a", "b</think>c"),
    ("<thinking>x", False, "", "<thinking>x"),
    ("<think>a < b and c </ d</think>x <think> y", False, "a < b and c </ d", "x <think> y"),
    ("\u3000<think>\u00a0wide</think>\u2003done", False, "wide", "done"),
]


@pytest.mark.parametrize("output,start,thinking,content", PARSER_CASES)
def test_thinking_parser_any_chunking(output: str, start: bool, thinking: str, content: str) -> None:
    want = (thinking, content)
    assert feed(ThinkingParser("<think>", "</think>", start), [output]) == want
    assert feed(ThinkingParser("<think>", "</think>", start), list(output)) == want
    for i in range(len(output) + 1):
        got = feed(ThinkingParser("<think>", "</think>", start), [output[:i], output[i:]])
        assert got == want, i


def test_thinking_parser_streams_without_waiting_for_the_end() -> None:
    p = ThinkingParser("<think>", "</think>")
    assert p.add("<thi") == ("", "")
    assert p.add("nk>Hello") == ("Hello", "")
    assert p.add(" world</") == (" world", "")
    assert p.add("think>\n") == ("", "")
    assert p.add("\nAnswer") == ("", "Answer")
    assert p.add("!") == ("", "!")
    assert p.finish() == ("", "")


def test_thinking_parser_rejects_empty_tags() -> None:
    with pytest.raises(ValueError):
        ThinkingParser("", "</think>")
