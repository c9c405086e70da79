"""schemathesis hooks for fuzzing a live Corral (loaded with SCHEMATHESIS_HOOKS=tests.fuzz.hooks).

- NDJSON: a stream is valid when it parses line by line, carries no `{"error"}` line, and ends
  in a final chunk (done:true, or status "success"); that chunk is what the schema validates.
- Cases are steered, never repaired: a field is changed only where its value is already of the
  right type, so a negative case stays negative. Half the inference cases (chosen by a hash of
  the body, so a seed replays) name a real model with a tiny `num_predict`; load-time options and
  keep_alive are dropped there so the fuzzer doesn't spend its time reloading models.
- Mutating routes reach only the temporary store and the loopback registry in FUZZ_REGISTRY,
  and never delete or overwrite the embedded models.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import schemathesis

GENERATIVE = "gemma3:270m"
EMBEDDING = "all-minilm"
RUNNER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap")


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx: Any, response: Any) -> Any:
    lines = [json.loads(line) for line in response.content.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty NDJSON stream")
    errors = [x for x in lines if isinstance(x, dict) and "error" in x]
    if errors:
        raise ValueError(f"stream ended with an error line: {errors[0]}")
    last = lines[-1]
    if not (last.get("done") is True or last.get("status") == "success"):
        raise ValueError(f"stream has no final chunk: last line {last}")
    return last


def _picked(body: dict) -> bool:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).digest()
    return digest[0] % 2 == 0


def _valid_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _steer_inference(body: dict, model: str) -> None:
    if isinstance(body.get("model"), str) and body["model"] and _picked(body):
        body["model"] = model
        if isinstance(body.get("keep_alive"), (str, int, float)) and not isinstance(
                body["keep_alive"], bool):
            body.pop("keep_alive")
    if "options" not in body:
        body["options"] = {}
    options = body["options"]
    if not isinstance(options, dict):
        return
    if body.get("model") == model:
        for key in RUNNER_OPTIONS:  # only well-typed values: a wrong type must stay wrong
            value = options.get(key)
            if isinstance(value, bool) if key == "use_mmap" else (
                    isinstance(value, (int, float)) and not isinstance(value, bool)):
                options.pop(key)
    # Any model the fuzzer itself created generates too: always a few tokens, never num_ctx's
    # worth on a CPU.
    if "num_predict" not in options:
        options["num_predict"] = 3
    elif _valid_int(options["num_predict"]) and not 1 <= options["num_predict"] <= 3:
        options["num_predict"] = 3


def _registry_name(value: str) -> str:
    registry = os.environ["FUZZ_REGISTRY"]
    tail = re.sub(r"[^a-z0-9]", "", value.lower())[:20] or "m"
    return f"{registry}/fuzz/{tail}:latest"


def _protected(name: str) -> bool:
    """The embedded models the other cases use: never deleted or overwritten by the fuzzer."""
    short = name.lower().removeprefix("registry.ollama.ai/").removeprefix("library/")
    return short.split(":")[0] in ("gemma3", "all-minilm")


def _spare_base_models(body: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        if isinstance(body.get(key), str) and _protected(body[key]):
            body[key] = "fuzz-" + body[key]


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    body = case.body
    if not isinstance(body, dict):
        return case
    path = case.operation.path
    if path in ("/api/create", "/api/delete"):
        _spare_base_models(body, ("model", "name"))
    elif path == "/api/copy":
        _spare_base_models(body, ("destination",))
    if path in ("/api/generate", "/api/chat"):
        _steer_inference(body, GENERATIVE)
    elif path in ("/api/embed", "/api/embeddings"):
        _steer_inference(body, EMBEDDING)
    elif path in ("/api/pull", "/api/push"):
        for key in ("model", "name"):
            if isinstance(body.get(key), str) and body[key]:
                body[key] = _registry_name(body[key])
        if body.get("insecure") is None or isinstance(body["insecure"], bool):
            body["insecure"] = True  # the loopback registry speaks http
    elif path == "/api/create" and isinstance(body.get("from"), str):
        body["from"] = GENERATIVE  # never a pull from a public registry
    return case
