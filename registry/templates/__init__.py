"""Ollama's named templates and their autodetection from a GGUF's Jinja chat template.

`index.json` lists known Hugging Face chat templates with the name of the Go template that
reproduces each; `<name>.gotmpl` is that template and `<name>.json` its parameters (stop
tokens). On create from files, the GGUF's `tokenizer.chat_template` is matched to the closest
index entry by Levenshtein distance, and a distance under 100 selects it (template.Named).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from registry.gofmt import go_json

MAX_DISTANCE = 100

__all__ = ["NamedTemplate", "detect_template", "named_template", "known_templates", "levenshtein"]


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    template: str                    # the Go template text (.gotmpl), line endings normalized
    parameters: dict | None = None   # {"stop": [...]}, or None when the name has no params file

    def params_blob(self) -> bytes | None:
        """The params layer Ollama writes: json.Encoder output of {"stop": [...]}, HTML-escaped."""
        if self.parameters is None:
            return None
        stops = self.parameters.get("stop")
        body = "null" if stops is None else "[" + ",".join(go_json(s) for s in stops) + "]"
        return ('{"stop":' + body + "}\n").encode()


def _read(name: str) -> str | None:
    path = resources.files(__name__).joinpath(name)
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def named_template(name: str) -> NamedTemplate | None:
    """The named template `name` (e.g. "gemma3-instruct"), or None if there is none."""
    text = _read(f"{name}.gotmpl")
    if text is None:
        return None
    params = _read(f"{name}.json")
    parameters = None
    if params is not None:
        parameters = {"stop": json.loads(params).get("stop")}
    return NamedTemplate(name, text.replace("\r\n", "\n"), parameters)


@lru_cache(maxsize=1)
def known_templates() -> tuple[tuple[str, str], ...]:
    """(Jinja chat template, name) pairs in index order."""
    return tuple((e["template"], e["name"]) for e in json.loads(_read("index.json") or "[]"))


def levenshtein(a: str, b: str, limit: int | None = None) -> int:
    """Edit distance over code points; when `limit` is given, any result >= limit is just `limit`."""
    if limit is not None and abs(len(a) - len(b)) >= limit:
        return limit
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bs = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    prev = np.arange(len(b) + 1, dtype=np.int64)
    offsets = np.arange(len(b) + 1, dtype=np.int64)
    for i, ch in enumerate(a, start=1):
        # Substitution/deletion from the previous row, then insertions as a running minimum.
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bs != ord(ch)))
        cur = np.minimum.accumulate(cur - offsets) + offsets
        if limit is not None and cur.min() >= limit:
            return limit
        prev = cur
    d = int(prev[-1])
    return min(d, limit) if limit is not None else d


def detect_template(chat_template: str) -> NamedTemplate | None:
    """The named template whose Jinja source is closest to `chat_template`, if closer than 100."""
    if not chat_template:
        return None
    best_name, best = None, MAX_DISTANCE
    for jinja, name in known_templates():
        d = levenshtein(chat_template, jinja, limit=best)
        if d < best:
            best_name, best = name, d
    return named_template(best_name) if best_name is not None else None
