"""Capabilities a template gives a model (server/images.go Capabilities): tools when it
references .Tools, insert for .Suffix, thinking only when thinking tags can be inferred."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.model_info import capabilities, thinking_tags

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name,caps", [
    ("qwen25.gotmpl", ["tools"]),
    ("qwen3.gotmpl", ["tools", "thinking"]),
    ("deepseek_r1.gotmpl", ["thinking"]),
    ("llama31.gotmpl", ["tools"]),
    ("mistral.gotmpl", ["tools"]),
])
def test_family_templates(name: str, caps: list[str]) -> None:
    assert capabilities(None, (FIXTURES / "templates" / name).read_text()) == caps


def test_gemma3_tools_fixture() -> None:
    text = (FIXTURES / "gemma3_tools.gotmpl").read_text()
    assert capabilities(None, text) == ["tools", "thinking"]
    assert thinking_tags(text) == ("<think>", "</think>")


@pytest.mark.parametrize("template,caps", [
    ("{{ if .Think }}/think{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}", []),
    ("{{ .ThinkLevel }}{{ .Prompt }}", []),
    ("{{ range .Messages }}<think>{{ .Thinking }}</think>{{ end }}", ["thinking"]),
    ("{{ range .Messages }}{{ .Thinking }}{{ end }}", []),
    ("{{ range $.Tools }}{{ .Function.Name }}{{ end }}{{ .Prompt }}", ["tools"]),
    ("{{ .Prompt }}<FIM>{{ .Suffix }}", ["insert"]),
    ('{{ range .Messages }}{{ if eq .Role "}}" }}<t>{{ .Thinking }}</t>{{ end }}{{ end }}',
     ["thinking"]),
    ("", []),
])
def test_template_capabilities(template: str, caps: list[str]) -> None:
    assert capabilities(None, template) == caps


def test_unbalanced_template_has_no_thinking() -> None:
    assert thinking_tags("{{ end }}{{ range .Messages }}<t>{{ .Thinking }}</t>") == ("<t>", "</t>")
    assert thinking_tags("{{ else }}{{ end }}{{ end }}") == ("", "")
