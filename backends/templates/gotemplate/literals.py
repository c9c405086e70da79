"""Go literal syntax: numbers, interpreted strings with escapes, and character constants."""

from __future__ import annotations

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", "'": "'", '"': '"'}


def parse_number(text: str) -> int | float:
    """A Go numeric constant as text/template reads it: an int unless it has a float's form."""
    body = text.replace("_", "")
    sign = 1
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body:
        raise ValueError(text)
    low = body.lower()
    if low.startswith(("0x", "0b", "0o")) and "." not in low and "p" not in low:
        return sign * int(body, 0)
    if low.startswith("0x"):
        return sign * float.fromhex(body)
    if any(c in low for c in ".e") or low in ("inf", "nan"):
        if low in ("inf", "nan", "infinity"):
            raise ValueError(text)
        return sign * float(body)
    if len(body) > 1 and body[0] == "0" and body.isdigit():
        return sign * int(body, 8)  # Go's legacy octal form
    if not body.isdigit():
        raise ValueError(text)
    return sign * int(body)


def unquote(text: str) -> str:
    """Decode a Go string literal: "interpreted" with escapes, or `raw`."""
    if text.startswith("`"):
        return text[1:-1].replace("\r", "")
    return _decode_escapes(text[1:-1], '"')


def unquote_char(text: str) -> int:
    value = _decode_escapes(text[1:-1], "'")
    if len(value) != 1:
        raise ValueError(f"malformed character constant: {text}")
    return ord(value)


def _decode_escapes(body: str, quote: str) -> str:
    out: list[str] = []
    raw_bytes = bytearray()

    def flush() -> None:
        if raw_bytes:
            out.append(raw_bytes.decode("utf-8", errors="replace"))
            raw_bytes.clear()

    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            flush()
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("invalid syntax")
        e = body[i + 1]
        if e in _SIMPLE_ESCAPES:
            if e in "'\"" and e != quote:
                raise ValueError("invalid syntax")
            flush()
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e in "xuU01234567":
            if e == "x":
                digits, base, size = body[i + 2:i + 4], 16, 2
            elif e == "u":
                digits, base, size = body[i + 2:i + 6], 16, 4
            elif e == "U":
                digits, base, size = body[i + 2:i + 10], 16, 8
            else:
                digits, base, size = body[i + 1:i + 4], 8, 3
            if len(digits) != size:
                raise ValueError("invalid syntax")
            value = int(digits, base)
            if e in "x01234567":
                raw_bytes.append(value)  # \x and octal escapes are single bytes
            else:
                flush()
                out.append(chr(value))
            i += (2 if e in "xuU" else 1) + size
        else:
            raise ValueError("invalid syntax")
    flush()
    return "".join(out)
