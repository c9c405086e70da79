"""Per-server adapters for the load generator: how to build a streaming request and read a chunk.

Corral speaks Ollama's native API (NDJSON lines); llama.cpp's `llama-server` streams its
`/completion` endpoint as server-sent events (`data: {...}` lines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

Messages = list[dict[str, str]]
Prompt = Union[str, Messages]

# Gemma's turn format, applied by hand where the server takes a raw prompt (llama-server's
# /completion, transformers): the same tokens Corral's template renders for one user message.
GEMMA_TURN = "<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"


@dataclass
class Chunk:
    """What one streamed line carried."""

    text: str = ""
    done: bool = False
    output_tokens: int | None = None
    error: str | None = None
    final: dict[str, Any] = field(default_factory=dict)


class Adapter(Protocol):
    name: str
    path: str

    def body(self, prompt: Prompt, num_predict: int, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def parse_line(self, line: str) -> Chunk | None: ...


def _decode(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return {"error": f"undecodable line: {line[:120]!r}"}
    return value if isinstance(value, dict) else {"error": f"unexpected line: {line[:120]!r}"}


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


@dataclass
class OllamaGenerate:
    """`POST /api/generate`, streaming NDJSON; output text in `response`, count in `eval_count`."""

    model: str
    name: str = "corral"
    path: str = "/api/generate"

    def body(self, prompt: Prompt, num_predict: int, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(prompt, str):
            raise TypeError("/api/generate takes a string prompt")
        return self._request({"prompt": prompt}, num_predict, seed, extra)

    def _request(self, fields: dict[str, Any], num_predict: int, seed: int,
                 extra: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            **fields,
            "stream": True,
            "options": {"temperature": 0, "num_predict": num_predict, "seed": seed},
        }
        body.update(extra or {})
        return body

    @staticmethod
    def text_of(data: dict[str, Any]) -> str:
        return str(data.get("response") or "")

    def parse_line(self, line: str) -> Chunk | None:
        data = _decode(line)
        if data is None:
            return None
        if "error" in data:
            return Chunk(error=_error_text(data["error"]), done=True)
        return self._chunk(data, self.text_of(data))

    @staticmethod
    def _chunk(data: dict[str, Any], text: str) -> Chunk:
        done = bool(data.get("done"))
        count = data.get("eval_count") if done else None
        return Chunk(
            text=text,
            done=done,
            output_tokens=int(count) if isinstance(count, int) else None,
            final=data if done else {},
        )


@dataclass
class OllamaChat(OllamaGenerate):
    """`POST /api/chat`, streaming NDJSON; output text in `message.content`."""

    path: str = "/api/chat"

    def body(self, prompt: Prompt, num_predict: int, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return self._request({"messages": messages}, num_predict, seed, extra)

    @staticmethod
    def text_of(data: dict[str, Any]) -> str:
        return str((data.get("message") or {}).get("content") or "")


@dataclass
class LlamaCompletion:
    """llama-server's `POST /completion`, streaming SSE; text in `content`, end at `stop: true`."""

    name: str = "llama-server"
    path: str = "/completion"
    template: str = GEMMA_TURN

    def body(self, prompt: Prompt, num_predict: int, seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(prompt, str):
            raise TypeError("/completion takes a string prompt")
        body: dict[str, Any] = {
            "prompt": self.template.format(prompt=prompt),
            "n_predict": num_predict,
            "temperature": 0,
            "seed": seed,
            "stream": True,
        }
        body.update(extra or {})
        return body

    def parse_line(self, line: str) -> Chunk | None:
        line = line.strip()
        if not line or line.startswith(":"):
            return None
        if line.startswith("data:"):
            line = line[len("data:"):].strip()
        elif line.startswith(("event:", "id:", "retry:")):
            return None
        if line == "[DONE]":
            return None
        data = _decode(line)
        if data is None:
            return None
        if "error" in data:
            return Chunk(error=_error_text(data["error"]), done=True)
        done = bool(data.get("stop"))
        count = data.get("tokens_predicted")
        if count is None:
            count = (data.get("timings") or {}).get("predicted_n")
        return Chunk(
            text=str(data.get("content") or ""),
            done=done,
            output_tokens=int(count) if done and isinstance(count, int) else None,
            final=data if done else {},
        )
