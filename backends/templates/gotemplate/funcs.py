"""Go text/template's builtin functions and the ones Ollama adds (template/template.go `funcs`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import urllib.parse
from typing import Any, Callable

from .gofmt import go_json, sprint, sprintf, sprintln, type_name


class FuncError(Exception):
    """A function call failed; the executor words it `error calling <name>: <msg>`."""


def truth(v: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, slices and maps are false."""
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, bytes, list, tuple, dict)):
        return len(v) > 0
    return True


def _basic_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "invalid"
    return "other"


def eq(arg1: Any, *args: Any) -> bool:
    if not args:
        raise FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in args:
        k2 = _basic_kind(arg)
        if k1 != k2:
            if arg1 is not None and arg is not None:
                raise FuncError("incompatible types for comparison")
            continue
        if k1 == "other":
            if isinstance(arg1, (list, dict)) or isinstance(arg, (list, dict)):
                raise FuncError(f"non-comparable type {sprint(arg)}: {type_name(arg)}")
            if arg1 == arg:
                return True
        elif arg1 == arg:
            return True
    return False


def ne(arg1: Any, arg2: Any) -> bool:
    return not eq(arg1, arg2)


def lt(arg1: Any, arg2: Any) -> bool:
    k1, k2 = _basic_kind(arg1), _basic_kind(arg2)
    for k in (k1, k2):
        if k in ("invalid", "other"):
            raise FuncError("invalid type for comparison")
    if k1 != k2:
        raise FuncError("incompatible types for comparison")
    if k1 == "bool":
        raise FuncError("invalid type for comparison")
    return arg1 < arg2


def le(arg1: Any, arg2: Any) -> bool:
    return lt(arg1, arg2) or eq(arg1, arg2)


def gt(arg1: Any, arg2: Any) -> bool:
    return not le(arg1, arg2)


def ge(arg1: Any, arg2: Any) -> bool:
    return not lt(arg1, arg2)


def not_(arg: Any) -> bool:
    return not truth(arg)


def length(item: Any) -> int:
    if item is None:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    if isinstance(item, (bytes, list, tuple, dict)):
        return len(item)
    raise FuncError(f"len of type {type_name(item)}")


def _index_of(v: Any, cap: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if v is None:
            raise FuncError("cannot index slice/array with nil")
        raise FuncError(f"cannot index slice/array with type {type_name(v)}")
    if v < 0 or v > cap:
        raise FuncError(f"index out of range: {v}")
    return v


def index(item: Any, *indices: Any) -> Any:
    if item is None:
        raise FuncError("index of untyped nil")
    for idx in indices:
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, (str, bytes, list, tuple)):
            seq = item.encode() if isinstance(item, str) else item
            i = _index_of(idx, len(seq))
            if i == len(seq):
                raise FuncError(f"index out of range: {i}")
            item = seq[i]
        elif isinstance(item, dict):
            item = item.get(idx)
        else:
            raise FuncError(f"can't index item of type {type_name(item)}")
    return item


def slice_(item: Any, *indices: Any) -> Any:
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indices) > 3:
        raise FuncError(f"too many slice indexes: {len(indices)}")
    if isinstance(item, str):
        if len(indices) == 3:
            raise FuncError("cannot 3-index slice a string")
        seq: Any = item.encode()
    elif isinstance(item, (list, tuple, bytes)):
        seq = item
    else:
        raise FuncError(f"can't slice item of type {type_name(item)}")
    bounds = [0, len(seq)]
    for i, idx in enumerate(indices[:2]):
        bounds[i] = _index_of(idx, len(seq))
    if len(indices) == 3:
        _index_of(indices[2], len(seq))
    if bounds[0] > bounds[1]:
        raise FuncError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    out = seq[bounds[0]:bounds[1]]
    return out.decode("utf-8", "replace") if isinstance(item, str) else out


def _eval_args(args: tuple) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(*args)


def html(*args: Any) -> str:
    s = _eval_args(args)
    table = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
    return "".join(table.get(c, c) for c in s)


def js(*args: Any) -> str:
    s = _eval_args(args)
    out = []
    for c in s:
        if c in "\\'\"":
            out.append("\\" + c)
        elif c in "<>&=`":
            out.append(f"\\u{ord(c):04X}")
        elif ord(c) < 0x20 or (ord(c) >= 0x80 and not c.isprintable()):
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args(args).encode("utf-8", "surrogatepass"), safe="-_.~")


def call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise FuncError("call of nil")
    if not callable(fn):
        raise FuncError(f"non-function of type {type_name(fn)}")
    return fn(*args)


def printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise FuncError(f"wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, *args)


# Ollama's additions -----------------------------------------------------------------------

def json_(v: Any) -> str:
    try:
        return go_json(v)
    except ValueError:
        return ""


def current_date(*_: Any) -> str:
    return _dt.date.today().strftime("%Y-%m-%d")


def yesterday_date(*_: Any) -> str:
    return (_dt.date.today() - _dt.timedelta(days=1)).strftime("%Y-%m-%d")


def to_typescript_type(v: Any) -> str:
    method = getattr(v, "to_typescript_type", None)
    return method() if callable(method) else "any"


# name -> (function, minimum args, maximum args or None for variadic)
BUILTINS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "and": (lambda *a: a[-1], 1, None),   # evaluated lazily by the executor
    "or": (lambda *a: a[-1], 1, None),
    "not": (not_, 1, 1),
    "len": (length, 1, 1),
    "index": (index, 1, None),
    "slice": (slice_, 1, None),
    "eq": (eq, 1, None),
    "ne": (ne, 2, 2),
    "lt": (lt, 2, 2),
    "le": (le, 2, 2),
    "gt": (gt, 2, 2),
    "ge": (ge, 2, 2),
    "print": (sprint, 0, None),
    "printf": (printf, 1, None),
    "println": (sprintln, 0, None),
    "html": (html, 0, None),
    "js": (js, 0, None),
    "urlquery": (urlquery, 0, None),
    "call": (call, 1, None),
}

OLLAMA_FUNCS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "json": (json_, 1, 1),
    "currentDate": (current_date, 0, None),
    "yesterdayDate": (yesterday_date, 0, None),
    "toTypeScriptType": (to_typescript_type, 1, 1),
}


def is_struct(v: Any) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)
