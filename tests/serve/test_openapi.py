"""Corral's OpenAPI description covers every operation and field of both seeds.

The seeds don't load as specs (one is a summary, the other lost its indentation), so their
operation and field lists are read from the text: paths with their methods, and per schema the
property names (a `name:` line followed by the property's `type`/`$ref`/`description`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serve.openapi import openapi_document

SEEDS = Path(__file__).parents[1] / "fixtures" / "seeds"
METHODS = ("get", "post", "put", "delete", "head", "patch")
SCHEMA_KEYWORDS = {"items", "properties", "required", "enum", "type", "description", "example",
                   "default", "format", "schema", "content", "contentEncoding"}

# curated seed schema -> Corral's component (or "Schema.property[]" for an array's items)
SCHEMA_MAP = {
    "GenerateCompletionRequest": "GenerateRequest",
    "RequestOptions": "ModelOptions",
    "GenerateCompletionResponse": "GenerateResponse",
    "GenerateChatCompletionRequest": "ChatRequest",
    "GenerateChatCompletionResponse": "ChatResponse",
    "Message": "Message",
    "GenerateEmbeddingRequest": "EmbeddingsRequest",
    "GenerateEmbeddingResponse": "EmbeddingsResponse",
    "CreateModelRequest": "CreateRequest",
    "CreateModelResponse": "StatusResponse",
    "ModelsResponse": "ListResponse",
    "Model": "ListResponse.models[]",
    "ModelInfoRequest": "ShowRequest",
    "ModelInfo": "ShowResponse",
    "CopyModelRequest": "CopyRequest",
    "DeleteModelRequest": "DeleteRequest",
    "PullModelRequest": "PullRequest",
    "PullModelResponse": "StatusResponse",
    "PushModelRequest": "PushRequest",
    "PushModelResponse": "StatusResponse",
}


def curated_seed() -> tuple[set[tuple[str, str]], dict[str, set[str]]]:
    lines = [x.strip() for x in (SEEDS / "ollama-curated-openapi.txt").read_text().splitlines()]
    ops: set[tuple[str, str]] = set()
    schemas: dict[str, set[str]] = {}
    path, current, in_props = None, None, False
    for i, line in enumerate(lines):
        if line == "components:":
            path = None
        m = re.fullmatch(r'"?(/[\w/{}]+)"?:', line)
        if m:
            path = "/api" + m.group(1)
            continue
        if path and line.rstrip(":") in METHODS and line.endswith(":"):
            ops.add((line.rstrip(":"), path))
            continue
        m = re.fullmatch(r"([A-Z]\w+):", line)
        if m and path is None:
            current, in_props = m.group(1), False
            schemas[current] = set()
            continue
        if current and line == "properties:":
            in_props = True
            continue
        m = re.fullmatch(r"([a-z][a-z0-9_]*):", line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if current and in_props and m and m.group(1) not in SCHEMA_KEYWORDS and re.match(
                r"(type|\$ref|description):", nxt):
            schemas[current].add(m.group(1))
    return ops, schemas


def summary_seed() -> tuple[set[tuple[str, str]], set[str], set[str]]:
    text = (SEEDS / "ollama-openapi-summary.txt").read_text()
    ops = {(m.group(2).lower(), m.group(1))
           for m in re.finditer(r"^(/api/\w+): # (GET|POST|DELETE|HEAD)", text, re.M)}
    inputs = text.split("Inputs", 1)[1].split("Outputs", 1)[0]
    outputs = text.split("Outputs", 1)[1].split("Usage Examples", 1)[0]
    row = re.compile(r"^\| (\w+) \|", re.M)
    return ops, set(row.findall(inputs)) - {"Name"}, set(row.findall(outputs)) - {"Name"}


def spec_props(doc: dict, target: str) -> set[str]:
    schemas = doc["components"]["schemas"]
    name, _, array_field = target.partition(".")
    schema = schemas[name]
    if array_field:
        schema = schema["properties"][array_field.rstrip("[]")]["items"]
    return set(schema["properties"])


def spec_ops(doc: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items()
            for method in item if method in METHODS}


@pytest.fixture(scope="module")
def doc() -> dict:
    return openapi_document()


def test_the_seeds_parse_into_what_they_describe():
    ops, schemas = curated_seed()
    assert len(ops) == 12 and ("head", "/api/blobs/{digest}") in ops
    assert len(schemas["RequestOptions"]) == 33
    assert schemas["CreateModelRequest"] == {"name", "modelfile", "stream"}
    summary_ops, inputs, outputs = summary_seed()
    assert len(summary_ops) == 12
    assert inputs == {"model", "prompt", "messages", "input", "stream", "options"}
    assert "total_duration" in outputs


def test_every_operation_of_both_seeds(doc):
    curated, _ = curated_seed()
    summary, _, _ = summary_seed()
    missing = (curated | summary) - spec_ops(doc)
    assert not missing, f"operations of the seeds Corral does not describe: {sorted(missing)}"
    assert len(spec_ops(doc)) == 15


@pytest.mark.parametrize("seed_schema", sorted(SCHEMA_MAP))
def test_every_field_of_the_curated_seed(doc, seed_schema):
    _, schemas = curated_seed()
    seed_fields = schemas[seed_schema]
    # the seed names the model `name`; Corral takes `model` and, as Ollama, the `name` alias
    missing = seed_fields - spec_props(doc, SCHEMA_MAP[seed_schema])
    assert seed_fields and not missing, f"{seed_schema}: {sorted(missing)} not described"


def test_the_summary_seeds_fields(doc):
    _, inputs, outputs = summary_seed()
    requests = {p for s in ("GenerateRequest", "ChatRequest", "EmbedRequest")
                for p in spec_props(doc, s)}
    replies = {p for s in ("GenerateResponse", "ChatResponse", "EmbedResponse", "ListResponse")
               for p in spec_props(doc, s)}
    assert not inputs - requests and not outputs - replies


def test_errors_are_described_as_corral_answers_them(doc):
    for path, item in doc["paths"].items():
        for method in set(item) & set(METHODS):
            responses = item[method]["responses"]
            for code in ("400", "401", "403", "404", "413", "429", "503"):
                assert code in responses, (method, path, code)
            assert "text/plain" in responses["405"]["content"]
    error = doc["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    links = doc["paths"]["/api/create"]["post"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == {"show", "copy", "delete"}


def test_served_at_api_openapi_json(app_client, doc):
    r = app_client.get("/api/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["openapi"] == "3.1.0"
    assert spec_ops(r.json()) == spec_ops(doc)
