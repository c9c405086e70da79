"""Property tests: parsers of hostile input raise only their documented errors.

Each parser is fed arbitrary text (and text built from its own grammar's pieces, which reaches
deeper than random bytes); any exception other than the documented one is a bug that would
surface as a 500. Round trips: print(parse(x)) parses back to the same commands, a formatted
duration parses back to its value.
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.templates.gotemplate.errors import TemplateError
from backends.templates.template import PromptTemplate, Values
from registry.errors import APIError
from registry.modelfile import parse_modelfile
from registry.names import ModelName
from registry.store import validate_digest
from serve.duration import DurationError, keep_alive_seconds, parse_go_duration
from serve.options import resolve_options, typed_options
from serve.requests import GENERATE_FIELDS
from serve.wire import decode_body

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@SETTINGS
@given(st.text() | st.sampled_from(["a/b/c/d/e", "host:99/ns/m:t", "../x", "m@sha256:00",
                                    "http://h/ns/m:t", "a:b:c", ":", "@", "x" * 400]))
def test_model_names_raise_only_api_errors(text):
    try:
        name = ModelName.parse(text)
        name.is_valid()
    except APIError:
        pass


@SETTINGS
@given(st.text() | st.from_regex(r"sha256[:-][0-9a-fA-F]{0,70}", fullmatch=True))
def test_digests_raise_only_api_errors(text):
    try:
        validate_digest(text)
    except APIError as err:
        assert err.status == 400


MODELFILE_LINES = st.sampled_from([
    "FROM gemma3:270m", "FROM ./model.gguf", 'SYSTEM """be brief"""', "SYSTEM hi",
    "TEMPLATE {{ .Prompt }}", "PARAMETER temperature 0.5", "PARAMETER stop <end>",
    "PARAMETER num_ctx 4096", "MESSAGE user hello", "MESSAGE assistant hi there",
    "LICENSE MIT", "ADAPTER ./a.gguf", "# a comment", "", '"""', "PARAMETER", "FROM",
    'SYSTEM """unterminated', "MESSAGE robot hi", "BOGUS x", "  FROM  spaced  ",
])


@SETTINGS
@given(st.lists(MODELFILE_LINES | st.text(max_size=30), max_size=8))
def test_modelfile_parse_print_round_trips(lines):
    text = "\n".join(lines)
    try:
        parsed = parse_modelfile(text)
    except APIError:
        return
    again = parse_modelfile(str(parsed))
    assert [(c.name, c.args) for c in again.commands] == [
        (c.name, c.args) for c in parsed.commands]


TEMPLATE_PIECES = st.sampled_from([
    "{{ .Prompt }}", "{{ .System }}", "{{ if .System }}", "{{ end }}", "{{ range .Messages }}",
    "{{ .Content }}", "{{ else }}", "{{- ", " -}}", "{{ $x := 1 }}", "{{ $x }}", "{{ len .Messages }}",
    "{{ json .Tools }}", "{{ index .Messages 0 }}", "{{ slice .Prompt 1 }}", "{{", "}}",
    "{{ .Missing.Field }}", "{{ template \"x\" }}", "{{ define \"x\" }}", "{{ eq 1 \"a\" }}",
    "text", "{{ /* c */ }}", "{{ printf \"%d\" .Prompt }}", "{{ with .Tools }}",
])


@SETTINGS
@given(st.lists(TEMPLATE_PIECES | st.text(max_size=10), max_size=10))
def test_go_templates_raise_only_template_errors(pieces):
    text = "".join(pieces)
    try:
        template = PromptTemplate.parse(text)
    except TemplateError:
        return
    try:
        template.execute(Values(messages=[], prompt="p"))
    except TemplateError:
        pass


@SETTINGS
@given(st.text(alphabet="0123456789.+-hmsunµμ", max_size=12) | st.text(max_size=12))
def test_go_durations_raise_only_duration_errors(text):
    try:
        value = parse_go_duration(text)
    except DurationError:
        return
    assert not math.isnan(value)


@SETTINGS
@given(st.integers(0, 10**6), st.sampled_from(["h", "m", "s", "ms"]))
def test_durations_round_trip(count, unit):
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}[unit]
    assert parse_go_duration(f"{count}{unit}") == count * scale
    assert keep_alive_seconds(f"-{count}{unit}") == (math.inf if count else 0.0)


OPTION_KEYS = st.sampled_from(["num_ctx", "top_p", "temperature", "stop", "seed", "num_thread",
                               "use_mmap", "top_k", "mirostat", "num_predict", "bogus"])


@SETTINGS
@given(st.dictionaries(OPTION_KEYS | st.text(max_size=8), json_values, max_size=6))
def test_options_raise_only_400s(options):
    try:
        typed_options(options)
        resolve_options({}, options, 4096)
    except APIError as err:
        assert err.status == 400 and err.message.startswith("option ")


@SETTINGS
@given(st.binary(max_size=200) | st.builds(
    lambda d: json.dumps(d).encode(),
    st.dictionaries(st.sampled_from(sorted(GENERATE_FIELDS)), json_values, max_size=6)))
def test_request_bodies_raise_only_400s(body):
    try:
        decode_body(body, "GenerateRequest", GENERATE_FIELDS)
    except APIError as err:
        assert err.status == 400
