"""Ollama's JSON on the wire: decoding request bodies with Go's error texts, encoding replies.

Ollama decodes with Go's encoding/json, so a wrong type is a 400 naming the Go struct field
(`json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string`) and
replies escape `<`, `>`, `&` as Go does. Each request type is declared once as a table of field
kinds; handlers get a plain dict whose present fields have the declared types.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Mapping

from registry.errors import APIError
from registry.gofmt import go_json

INT64 = 2**63

# Field kinds and the Go type Ollama declares for them (used in type-mismatch messages).
GO_TYPES = {
    "string": "string",
    "bool": "bool",
    "int": "int",
    "float": "float64",
    "strings": "[]string",
    "ints": "[]int",
    "object": "map[string]interface {}",
    "messages": "[]api.Message",
    "tools": "api.Tools",
    "raw": "json.RawMessage",
    "duration": "api.Duration",
    "license": "api.License",
    "think": "api.ThinkValue",
    "input": "interface {}",
    "any": "interface {}",
}


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _mismatch(value: Any, struct: str, field: str, kind: str) -> APIError:
    return APIError(
        400,
        f"json: cannot unmarshal {json_kind(value)} into Go struct field "
        f"{struct}.{field} of type {GO_TYPES[kind]}",
    )


def _check(value: Any, kind: str) -> bool:
    if value is None:
        return True  # JSON null leaves a Go field at its zero value
    if kind in ("string", "license_item"):
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "ints":
        return isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    if kind == "object":
        return isinstance(value, dict)
    if kind in ("messages", "tools"):
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if kind == "duration":
        return isinstance(value, (int, float, str)) and not isinstance(value, bool)
    if kind == "license":
        return isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
    if kind == "think":
        return isinstance(value, (bool, str))
    return True  # raw, input, any


def go_syntax_error(err: json.JSONDecodeError) -> str:
    """An approximation of Go's json.SyntaxError text for a malformed body."""
    if err.pos >= len(err.doc) or err.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = err.doc[err.pos]
    if err.msg.startswith("Expecting value"):
        return f"invalid character {char!r} looking for beginning of value"
    if err.msg.startswith("Extra data"):
        return f"invalid character {char!r} after top-level value"
    if "delimiter" in err.msg and "','" in err.msg:
        return f"invalid character {char!r} after object key:value pair"
    if "delimiter" in err.msg and "':'" in err.msg:
        return f"invalid character {char!r} after object key"
    if "property name" in err.msg:
        return f"invalid character {char!r} looking for beginning of object key string"
    return f"invalid character {char!r} in string literal"


class _NotGoJSON(ValueError):
    pass


def _no_constant(name: str) -> Any:
    # NaN and Infinity are Python's extension; Go's decoder stops at their first letter.
    raise _NotGoJSON(f"invalid character {name[0]!r} looking for beginning of value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: Go's float64 can't hold it either
        raise _NotGoJSON(f"json: cannot unmarshal number {text} into Go value of type float64")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not -INT64 <= value < INT64:
        raise _NotGoJSON(f"json: cannot unmarshal number {text} into Go value of type int64")
    return value


def loads(body: bytes | str) -> Any:
    """JSON as Go's encoding/json accepts it: no NaN/Infinity, numbers within float64/int64.
    Raises APIError(400) with Go's text."""
    try:
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite_float,
                          parse_int=_int64)
    except _NotGoJSON as err:
        raise APIError(400, str(err)) from None
    except json.JSONDecodeError as err:
        raise APIError(400, go_syntax_error(err)) from None
    except (UnicodeDecodeError, RecursionError):
        raise APIError(400, "invalid character in request body") from None


def decode_body(body: bytes, struct: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """Parse a request body as Go's ShouldBindJSON would into `struct` with `fields` kinds."""
    if not body.strip():
        raise APIError(400, "missing request body")
    data = loads(body)
    if not isinstance(data, dict):
        raise APIError(
            400, f"json: cannot unmarshal {json_kind(data)} into Go value of type api.{struct}"
        )
    for name, kind in fields.items():
        if name in data and not _check(data[name], kind):
            raise _mismatch(data[name], struct, name, kind)
    return data


def model_field(data: Mapping[str, Any]) -> str:
    """`model`, with Ollama's deprecated alias `name` where `model` is empty."""
    return data.get("model") or data.get("name") or ""


def encode(obj: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, HTML characters escaped."""
    return go_json(obj).encode("utf-8")


def go_time(dt: datetime) -> str:
    """RFC3339Nano with trailing zeros trimmed, as Go formats time.Time."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{dt.microsecond:06d}".rstrip("0")
    if frac:
        base += "." + frac
    offset = dt.utcoffset()
    if not offset:
        return base + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{base}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def now_utc() -> str:
    return go_time(datetime.now(timezone.utc))
