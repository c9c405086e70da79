"""Go's text forms that Ollama's wire and files use: strconv.Quote and encoding/json output.

The one place for them, at the ground floor, so the store, the Modelfile printer, the template
engine and the HTTP layer all write the same bytes Ollama writes.
"""

from __future__ import annotations

import json
from typing import Any

_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                  "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(s: str) -> str:
    """strconv.Quote: a double-quoted Go string literal (what %q and %#v print)."""
    out = ['"']
    for c in s:
        if c in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[c])
        elif c == " " or (c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF):
            out.append(c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        elif 0xD800 <= ord(c) <= 0xDFFF:
            out.append("\\ufffd")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


def go_json(obj: Any) -> str:
    """Compact JSON as Go's encoder writes it: no spaces, `<`, `>`, `&`, U+2028/9 escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
