"""Go's printing of values: fmt's %v family, strconv.Quote, and encoding/json's Marshal.

Python values stand for Go values: None is nil, dict a map (printed and marshalled with sorted
keys, as Go does), `OrderedMap` a map marshalled in insertion order, list a slice. Objects may
define `__go_string__` (Go's Stringer, used when printing) and `__go_json__` (the value to
marshal in their place); other dataclasses print and marshal as Go structs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from decimal import Decimal
from typing import Any

from registry.gofmt import go_quote


class OrderedMap(dict):
    """A Go map type whose JSON keeps insertion order (Ollama's ordered maps)."""


def type_name(v: Any) -> str:
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return getattr(v, "__go_type__", type(v).__name__)


# strconv -----------------------------------------------------------------------------------

def _shortest_digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits d and point position dp: |f| = 0.d * 10**dp."""
    sign, digits, exp = Decimal(repr(abs(f))).as_tuple()
    d = "".join(map(str, digits)).lstrip("0") or "0"
    dp = len(digits) + exp - (len(digits) - len("".join(map(str, digits)).lstrip("0")))
    d = d.rstrip("0") or "0"
    if d == "0":
        dp = 1
    return d, dp


def _fmt_e(d: str, dp: int, neg: bool) -> str:
    exp = dp - 1 if d != "0" else 0
    mant = d[0] + ("." + d[1:] if len(d) > 1 else "")
    sign = "-" if exp < 0 else "+"
    return ("-" if neg else "") + f"{mant}e{sign}{abs(exp):02d}"


def _fmt_f(d: str, dp: int, neg: bool) -> str:
    if d == "0":
        body = "0"
    elif dp <= 0:
        body = "0." + "0" * (-dp) + d
    elif dp >= len(d):
        body = d + "0" * (dp - len(d))
    else:
        body = d[:dp] + "." + d[dp:]
    return ("-" if neg else "") + body


def format_float_g(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64), which is also fmt's %v for a float64."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    d, dp = _shortest_digits(f)
    neg = math.copysign(1, f) < 0
    exp = dp - 1
    if d != "0" and (exp < -4 or exp >= 6):
        return _fmt_e(d, dp, neg)
    return _fmt_f(d, dp, neg)


format_float_v = format_float_g


# fmt ---------------------------------------------------------------------------------------

def sprint_value(v: Any, depth: int = 0) -> str:
    """fmt's %v of one operand."""
    if v is None:
        return "<nil>"
    if hasattr(v, "__go_string__"):
        return v.__go_string__()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float_v(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return "[" + " ".join(str(b) for b in v) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(sprint_value(x, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        items = sorted_items(v)
        return "map[" + " ".join(f"{sprint_value(k, depth + 1)}:{sprint_value(x, depth + 1)}"
                                 for k, x in items) + "]"
    if dataclasses.is_dataclass(v):
        body = "{" + " ".join(sprint_value(getattr(v, f.name), depth + 1)
                              for f in dataclasses.fields(v)) + "}"
        return ("&" if depth == 0 and getattr(v, "__go_pointer__", False) else "") + body
    if callable(v):
        return f"{hex(id(v))}"
    return str(v)


def sorted_items(m: dict) -> list[tuple[Any, Any]]:
    try:
        return sorted(m.items(), key=lambda kv: kv[0])
    except TypeError:
        return sorted(m.items(), key=lambda kv: str(kv[0]))


def sprint(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out = []
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(sprint_value(a))
    return "".join(out)


def sprintln(*args: Any) -> str:
    return " ".join(sprint_value(a) for a in args) + "\n"


_VERB = re.compile(r"%([-+# 0]*)(\[\d+\])?(\*|\d+)?(?:\.(\*|\d*))?(\[\d+\])?([a-zA-Z%])")


def sprintf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf for the verbs templates use: %v %s %d %q %t %f %e %g %x %X %c %T %%."""
    out: list[str] = []
    argi = 0
    pos = 0
    used_index = False
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, idx1, width, prec, idx2, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        idx = idx2 or idx1
        if idx:
            argi = int(idx[1:-1]) - 1
            used_index = True
        w = None
        if width == "*":
            w = args[argi] if argi < len(args) else 0
            argi += 1
        elif width:
            w = int(width)
        p = None
        if prec == "*":
            p = args[argi] if argi < len(args) else 0
            argi += 1
        elif prec is not None:
            p = int(prec or 0)
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argi]
        argi += 1
        out.append(_pad(_format_verb(verb, flags, p, arg), w, flags))
    out.append(fmt[pos:])
    if argi < len(args) and not used_index:
        extra = ", ".join(f"{type_name(a)}={sprint_value(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _pad(s: str, width: int | None, flags: str) -> str:
    if width is None or len(s) >= width:
        return s
    if "-" in flags:
        return s + " " * (width - len(s))
    if "0" in flags and s[:1] in "-+" and s[1:].replace(".", "").isdigit():
        return s[0] + "0" * (width - len(s)) + s[1:]
    if "0" in flags and s.replace(".", "").isdigit():
        return "0" * (width - len(s)) + s
    return " " * (width - len(s)) + s


def _bad(verb: str, arg: Any) -> str:
    if arg is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(arg)}={sprint_value(arg)})"


def _format_verb(verb: str, flags: str, prec: int | None, arg: Any) -> str:
    if verb == "T":
        return type_name(arg)
    if verb == "v":
        if "#" in flags and isinstance(arg, str):
            return go_quote(arg)
        return sprint_value(arg)
    if verb in "sq" and (isinstance(arg, str) or hasattr(arg, "__go_string__")):
        s = arg if isinstance(arg, str) else arg.__go_string__()
        if prec is not None:
            s = s[:prec]
        if verb == "q":
            return ("`" + s + "`") if "#" in flags and "`" not in s else go_quote(s)
        return s
    if verb == "s" and isinstance(arg, (list, tuple, dict)) or verb == "s" and dataclasses.is_dataclass(arg):
        return sprint_value(arg)
    if verb == "t" and isinstance(arg, bool):
        return "true" if arg else "false"
    if isinstance(arg, bool) or arg is None:
        return _bad(verb, arg)
    if isinstance(arg, int):
        if verb == "d":
            s = str(arg)
            return ("+" + s if "+" in flags and arg >= 0 else s)
        if verb in "xX":
            s = format(arg, verb)
            return ("0x" + s if "#" in flags else s) if verb == "x" else ("0X" + s if "#" in flags else s)
        if verb == "o":
            return format(arg, "o")
        if verb == "b":
            return format(arg, "b")
        if verb == "c":
            return chr(arg)
        if verb == "q":
            return "'" + go_quote(chr(arg))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'"
        if verb in "eEfFgG":
            return _bad(verb, arg)
        return _bad(verb, arg)
    if isinstance(arg, float):
        if verb in "fF":
            return f"{arg:.{6 if prec is None else prec}f}"
        if verb in "eE":
            s = f"{arg:.{6 if prec is None else prec}e}"
            return s.upper() if verb == "E" else s
        if verb in "gG":
            return format_float_g(arg) if prec is None else f"{arg:.{prec}g}"
        return _bad(verb, arg)
    if isinstance(arg, str) and verb in "xX":
        s = arg.encode().hex()
        return s.upper() if verb == "X" else s
    return _bad(verb, arg)


# encoding/json -----------------------------------------------------------------------------

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_string(s: str) -> str:
    out = ['"']
    for c in s:
        e = _JSON_ESCAPES.get(c)
        if e is not None:
            out.append(e)
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
        elif 0xD800 <= ord(c) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def json_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"json: unsupported value: {format_float_g(f)}")
    d, dp = _shortest_digits(f)
    neg = math.copysign(1, f) < 0 and f != 0
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        s = _fmt_e(d, dp, neg)
        return re.sub(r"e([+-])0(\d)$", r"e\1\2", s)
    return _fmt_f(d, dp, neg)


def go_json(v: Any) -> str:
    """encoding/json.Marshal: compact, map keys sorted, <, > and & escaped."""
    if hasattr(v, "__go_json__"):
        return go_json(v.__go_json__())
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return json_float(v)
    if isinstance(v, str):
        return json_string(v)
    if isinstance(v, (bytes, bytearray)):
        import base64

        return json_string(base64.b64encode(bytes(v)).decode())
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    if isinstance(v, OrderedMap):
        return "{" + ",".join(f"{json_string(str(k))}:{go_json(x)}" for k, x in v.items()) + "}"
    if isinstance(v, dict):
        items = sorted(((str(k), x) for k, x in v.items()), key=lambda kv: kv[0])
        return "{" + ",".join(f"{json_string(k)}:{go_json(x)}" for k, x in items) + "}"
    if dataclasses.is_dataclass(v):
        return go_json(OrderedMap((f.name, getattr(v, f.name)) for f in dataclasses.fields(v)))
    raise ValueError(f"json: unsupported type: {type_name(v)}")
