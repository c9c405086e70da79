"""Corral's own OpenAPI 3.1 description of the native API, served at `GET /api/openapi.json`.

Request bodies are built from the same field tables the handlers decode with (`serve.requests`,
`serve.routes.*`), so the description cannot drift from what the server checks. It covers both
seeds: the 12 current operations under /api, and the older spec's blobs, legacy embeddings and
Modelfile-string create; plus the errors Corral really answers (`{"error": ...}`; 405 is
Ollama's plain text). Response schemas name the fields clients rely on and leave the rest open,
as Ollama adds fields over time. Links chain create → show → copy → delete for stateful fuzzing.
"""

from __future__ import annotations

from typing import Any, Mapping

from serve import requests as req
from serve.options import BOOL_OPTIONS, FLOAT_OPTIONS, IGNORED_OPTIONS, INT_OPTIONS
from serve.routes.models import COPY_FIELDS, CREATE_FIELDS, DELETE_FIELDS, SHOW_FIELDS
from serve.routes.transfer import PULL_FIELDS, PUSH_FIELDS
from serve.version import CORRAL_VERSION

Schema = dict[str, Any]

# Options older clients (and the curated seed) still send; Ollama accepts and ignores them.
LEGACY_OPTIONS = ("num_gqa", "embedding_only", "rope_frequency_base", "rope_frequency_scale")

ERROR_STATUSES = {
    "400": "The request is malformed or names an invalid value",
    "401": "An API key is required",
    "403": "The key may not do this",
    "404": "The model (or blob) does not exist",
    "413": "The body is larger than the server accepts",
    "429": "Too many requests for this key",
    "503": "The queue is full or the server is draining",
    "507": "No space left on device",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _kind_schema(kind: str) -> Schema:
    """JSON Schema for a decode_body field kind; refined kinds point at component schemas."""
    simple: dict[str, Schema] = {
        "string": {"type": "string"},
        "bool": {"type": "boolean"},
        "int": {"type": "integer"},
        "float": {"type": "number"},
        "strings": {"type": "array", "items": {"type": "string"}},
        "ints": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "object": {"type": "object"},
        "messages": {"type": "array", "items": _ref("Message")},
        "tools": {"type": "array", "items": _ref("Tool")},
        "duration": {"type": ["string", "number"], "description": "a Go duration or seconds"},
        "license": {"type": ["string", "array"], "items": {"type": "string"}},
        "think": {"type": ["boolean", "string"], "enum": [True, False, *req.THINK_LEVELS]},
        "input": {"type": ["string", "array"], "items": {"type": "string"}},
    }
    return dict(simple.get(kind, {}))


def _nullable(schema: Schema) -> Schema:
    """Go decodes JSON null into any field as its zero value: null is always accepted."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema.get("type")
    if kind is None:
        return schema
    out = dict(schema)
    out["type"] = [*(kind if isinstance(kind, list) else [kind]), "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _body(fields: Mapping[str, str], required: tuple[str, ...] = (), **refined: Schema) -> Schema:
    props = {name: refined.get(name, _kind_schema(kind)) for name, kind in fields.items()
             if not name.startswith("_")}
    props = {name: s if name in required else _nullable(s) for name, s in props.items()}
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


MODEL_NAME: Schema = {"type": "string", "minLength": 1, "description": "model:tag, tag optional"}


def _options_schema() -> Schema:
    props: dict[str, Schema] = {}
    for key in INT_OPTIONS:  # Ollama decodes options as float64s: 2.5 is accepted, truncated
        props[key] = {"type": ["number", "null"]}
    for key in FLOAT_OPTIONS:
        props[key] = {"type": ["number", "null"]}
    for key in BOOL_OPTIONS:
        props[key] = {"type": ["boolean", "null"]}
    props["stop"] = {"type": ["array", "null"], "items": {"type": "string"}}
    for key in (*IGNORED_OPTIONS, *LEGACY_OPTIONS):
        props[key] = {"description": "accepted and ignored"}
    props["num_thread"]["description"] = "checked, then ignored: the server owns its threads"
    return {"type": "object", "properties": dict(sorted(props.items()))}


def _schemas() -> dict[str, Schema]:
    options = _ref("ModelOptions")
    model = {"model": MODEL_NAME}
    stats = {k: {"type": "integer"} for k in (
        "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
        "eval_count", "eval_duration")}
    status = {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string"}, "digest": {"type": "string"},
        "total": {"type": "integer"}, "completed": {"type": "integer"}}}
    details = {"type": "object", "properties": {k: {"type": "string"} for k in (
        "parent_model", "format", "family", "parameter_size", "quantization_level")}}
    listed = {"type": "object", "required": ["name", "model", "digest"], "properties": {
        "name": {"type": "string"}, "model": {"type": "string"},
        "modified_at": {"type": "string"}, "expires_at": {"type": "string"},
        "size": {"type": "integer"}, "size_vram": {"type": "integer"},
        "digest": {"type": "string"}, "details": details}}
    return {
        "ModelOptions": _options_schema(),
        "Message": _body(req.MESSAGE_FIELDS, ("role",), role={"type": "string"},
                         tool_calls={"type": "array", "items": {"type": "object"}}),
        "Tool": {"type": "object", "properties": {
            "type": {"type": "string"}, "function": {"type": "object"}}},
        "GenerateRequest": _body(req.GENERATE_FIELDS, ("model",), options=options, **model,
                                 format={"type": ["string", "object"]}),
        "ChatRequest": _body(req.CHAT_FIELDS, ("model",), options=options, **model,
                             format={"type": ["string", "object"]}),
        "EmbedRequest": _body(req.EMBED_FIELDS, ("model",), options=options, **model),
        "EmbeddingsRequest": _body(req.EMBEDDINGS_FIELDS, ("model",), options=options, **model),
        "ShowRequest": _body(SHOW_FIELDS, ("model",), options=options, **model),
        "CreateRequest": _body(CREATE_FIELDS, ("model",), **model,
                               files={"type": "object", "additionalProperties": {"type": "string"}},
                               adapters={"type": "object",
                                         "additionalProperties": {"type": "string"}},
                               parameters={"type": "object"}),
        "CopyRequest": _body(COPY_FIELDS, ("source", "destination"), source=MODEL_NAME,
                             destination=MODEL_NAME),
        "DeleteRequest": _body(DELETE_FIELDS, ("model",), **model),
        "PullRequest": _body(PULL_FIELDS, ("model",), **model),
        "PushRequest": _body(PUSH_FIELDS, ("model",), **model),
        "GenerateResponse": {"type": "object", "required": ["model", "created_at", "done"],
                             "properties": {
            "model": {"type": "string"}, "created_at": {"type": "string"},
            "response": {"type": "string"}, "thinking": {"type": "string"},
            "done": {"type": "boolean"}, "done_reason": {"type": "string"},
            "context": {"type": "array", "items": {"type": "integer"}}, **stats}},
        "ChatResponse": {"type": "object", "required": ["model", "created_at", "done"],
                         "properties": {
            "model": {"type": "string"}, "created_at": {"type": "string"},
            "message": {"type": "object", "properties": {
                "role": {"type": "string"}, "content": {"type": "string"},
                "thinking": {"type": "string"},
                "tool_calls": {"type": "array", "items": {"type": "object"}}}},
            "done": {"type": "boolean"}, "done_reason": {"type": "string"}, **stats}},
        "EmbedResponse": {"type": "object", "required": ["model", "embeddings"], "properties": {
            "model": {"type": "string"},
            "embeddings": {"type": "array", "items": {"type": "array",
                                                      "items": {"type": "number"}}},
            "total_duration": {"type": "integer"}, "load_duration": {"type": "integer"},
            "prompt_eval_count": {"type": "integer"}}},
        "EmbeddingsResponse": {"type": "object", "required": ["embedding"], "properties": {
            "embedding": {"type": "array", "items": {"type": "number"}}}},
        "ListResponse": {"type": "object", "required": ["models"], "properties": {
            "models": {"type": "array", "items": listed}}},
        "ShowResponse": {"type": "object", "properties": {
            "license": {"type": "string"}, "modelfile": {"type": "string"},
            "parameters": {"type": "string"}, "template": {"type": "string"},
            "system": {"type": "string"}, "details": details, "model_info": {"type": "object"},
            "capabilities": {"type": "array", "items": {"type": "string"}},
            "modified_at": {"type": "string"}}},
        "StatusResponse": status,
        "VersionResponse": {"type": "object", "required": ["version"],
                            "properties": {"version": {"type": "string"}}},
        "ErrorResponse": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
    }


def _errors() -> dict[str, Any]:
    out: dict[str, Any] = {code: {"description": text, "content": {
        "application/json": {"schema": _ref("ErrorResponse")}}}
        for code, text in ERROR_STATUSES.items()}
    out["405"] = {"description": "Method not allowed (Ollama's plain text, with Allow)",
                  "content": {"text/plain": {"schema": {"type": "string"}}}}
    return out


def _op(op_id: str, summary: str, *, body: str | None = None, reply: str | None = None,
        stream: bool = False, status: str = "200", links: dict | None = None,
        **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if reply:
        content["application/json"] = {"schema": _ref(reply)}
        if stream:
            content["application/x-ndjson"] = {"schema": _ref(reply)}
    ok: dict[str, Any] = {"description": "Success" + (" (NDJSON unless stream is false)"
                                                      if stream else "")}
    if content:
        ok["content"] = content
    if links:
        ok["links"] = links
    op: dict[str, Any] = {"operationId": op_id, "summary": summary,
                          "responses": {status: ok, **_errors()}, **extra}
    if body:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(body)}}}
    return op


def _link(op_id: str, body: dict[str, str]) -> dict[str, Any]:
    return {"operationId": op_id, "requestBody": body}


DIGEST_PARAM = {"name": "digest", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^sha256[:-][0-9a-f]{64}$"}}


def _paths() -> dict[str, Any]:
    created = "$request.body#/model"
    return {
        "/api/generate": {"post": _op("generate", "Generate a completion", body="GenerateRequest",
                                      reply="GenerateResponse", stream=True)},
        "/api/chat": {"post": _op("chat", "Generate the next chat message", body="ChatRequest",
                                  reply="ChatResponse", stream=True)},
        "/api/embed": {"post": _op("embed", "Embed one or more inputs", body="EmbedRequest",
                                   reply="EmbedResponse")},
        "/api/embeddings": {"post": _op("embeddings", "Embed one prompt (legacy)",
                                        body="EmbeddingsRequest", reply="EmbeddingsResponse")},
        "/api/tags": {"get": _op("tags", "List local models", reply="ListResponse")},
        "/api/ps": {"get": _op("ps", "List loaded models", reply="ListResponse")},
        "/api/show": {"post": _op("show", "Show a model", body="ShowRequest",
                                  reply="ShowResponse")},
        "/api/create": {"post": _op(
            "create", "Create a model (structured fields, or a Modelfile string as of old)",
            body="CreateRequest", reply="StatusResponse", stream=True, links={
                "ShowCreated": _link("show", {"model": created}),
                "CopyCreated": _link("copy", {"source": created}),
                "DeleteCreated": _link("delete", {"model": created})})},
        "/api/copy": {"post": _op("copy", "Copy a model", body="CopyRequest", links={
            "DeleteCopy": _link("delete", {"model": "$request.body#/destination"})})},
        "/api/delete": {"delete": _op("delete", "Delete a model", body="DeleteRequest")},
        "/api/pull": {"post": _op("pull", "Pull a model from a registry", body="PullRequest",
                                  reply="StatusResponse", stream=True)},
        "/api/push": {"post": _op("push", "Push a model to a registry", body="PushRequest",
                                  reply="StatusResponse", stream=True)},
        "/api/version": {"get": _op("version", "Server version", reply="VersionResponse")},
        "/api/blobs/{digest}": {
            "parameters": [DIGEST_PARAM],
            "head": _op("checkBlob", "Whether a blob exists"),
            "post": {**_op("createBlob", "Upload a blob", status="201"), "requestBody": {
                "required": True, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}}},
        },
    }


def openapi_document() -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Corral (Ollama-compatible API)", "version": CORRAL_VERSION},
        "servers": [{"url": "http://localhost:11434"}],
        "paths": _paths(),
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
    }
    # A blob that already exists answers 200 to an upload, as Ollama's does.
    blob = doc["paths"]["/api/blobs/{digest}"]
    blob["post"]["responses"]["200"] = {"description": "The blob was already there"}
    blob["head"]["responses"]["404"] = {"description": "No such blob"}
    return doc
