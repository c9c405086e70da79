"""Go-style durations, as Ollama reads `keep_alive` and `OLLAMA_KEEP_ALIVE`.

A JSON number is seconds; a string must be a Go duration (`"5m"`, `"1h30m"`, `"-1m"`, `"0"`).
A bare numeric string other than "0" is an error, exactly as Go's `time.ParseDuration` rejects it.
Negative durations mean "forever", which we represent as `math.inf`.
"""

from __future__ import annotations

import math
import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_go_duration(text: str) -> float:
    """Seconds for a Go duration string; raises DurationError like `time.ParseDuration`."""
    s = text
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise DurationError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            if re.match(r"\d", s[pos:]) and not re.search(r"[a-zµμ]", s[pos:]):
                raise DurationError(f'time: missing unit in duration "{text}"')
            raise DurationError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def keep_alive_seconds(value: object) -> float:
    """keep_alive from JSON: seconds (math.inf for forever); raises DurationError for bad input."""
    if isinstance(value, bool) or value is None:
        raise DurationError("invalid keep_alive")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise DurationError("invalid keep_alive")
    return math.inf if seconds < 0 else seconds


def env_keep_alive(raw: str | None, default: float = 300.0) -> float:
    """OLLAMA_KEEP_ALIVE: a Go duration or integer seconds; invalid values fall back."""
    if raw is None or raw == "":
        return default
    try:
        return keep_alive_seconds(raw)
    except DurationError:
        try:
            return keep_alive_seconds(int(raw))
        except ValueError:
            return default
