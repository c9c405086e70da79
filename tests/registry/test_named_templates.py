"""Named templates and their autodetection from a Jinja chat template (Ollama's template.Named)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from registry.templates import detect_template, known_templates, levenshtein, named_template

def test_every_index_entry_detects_as_itself():
    for jinja, name in known_templates():
        found = detect_template(jinja)
        assert found is not None and found.name == name


def test_small_edits_still_match_and_unrelated_templates_do_not():
    llama3 = next(j for j, n in known_templates() if n == "llama3-instruct")
    edited = llama3.replace("message['content']", "message['content'] | trim", 1) + "{# local tweak #}"
    assert detect_template(edited).name == "llama3-instruct"
    assert detect_template("{% for m in messages %}{{ m.content }}{% endfor %}" + "x" * 500) is None
    assert detect_template("") is None


def test_named_template_files_and_params():
    gemma3 = named_template("gemma3-instruct")
    assert gemma3.parameters == {"stop": ["<end_of_turn>"]}
    assert gemma3.params_blob() == b'{"stop":["\\u003cend_of_turn\\u003e"]}\n'
    assert "<start_of_turn>user" in gemma3.template
    llama3 = named_template("llama3-instruct")
    assert llama3.parameters["stop"] == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert named_template("nope") is None
    for name in ("chatml", "mistral-instruct", "phi-3", "gemma-instruct"):
        assert named_template(name) is not None


def test_named_templates_parse_as_go_templates():
    from backends.templates.template import PromptTemplate

    for name in sorted({n for _, n in known_templates()}):
        PromptTemplate.parse(named_template(name).template)


def test_package_data_is_declared():
    files = {p.name for p in resources.files("registry.templates").iterdir()}
    assert {"index.json", "gemma3-instruct.gotmpl", "gemma3-instruct.json"} <= files
    assert isinstance(json.loads(resources.files("registry.templates").joinpath("index.json").read_text()), list)


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("héllo", "hello") == 1
    assert levenshtein("a" * 50, "b" * 50, limit=10) == 10
    assert levenshtein("abc", "x" * 500, limit=100) == 100


def test_gemma3_hf_template_variants_detect_as_gemma3_instruct():
    gemma3 = next(j for j, n in known_templates() if n == "gemma3-instruct")
    # A converter that drops the bos_token line and rewords an error stays within distance 100.
    variant = gemma3.replace("{{ bos_token }}\n", "").replace("Invalid content type", "Unsupported content")
    assert 0 < levenshtein(variant, gemma3) < 100
    assert detect_template(variant).name == "gemma3-instruct"


def test_packaged_gemma_gguf_carries_no_chat_template(gemma_gguf):
    """So create from it detects nothing (Ollama keeps `{{ .Prompt }}`); the embedded
    gemma3:270m names its template explicitly (registry/defaults.py)."""
    from registry.model_info import read_gguf

    meta = read_gguf(gemma_gguf)
    assert meta.architecture == "gemma3" and meta.chat_template == ""
    assert detect_template(meta.chat_template) is None
