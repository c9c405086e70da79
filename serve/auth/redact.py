"""Secrets never reach a log: every record, from any logger, is redacted as it is created.

A record factory (not a handler filter) so that loggers and handlers configured later, uvicorn's
access log among them, are covered too. Arguments keep their types where they are not text, so
formatters that unpack `record.args` (uvicorn's access formatter) still work.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Iterable

MASK = "[REDACTED]"

_PATTERNS = [
    # Authorization schemes with their credential: `Bearer abc`, `Basic dXNlcjpwdw==`
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=:-]{4,}"), r"\1\2" + MASK),
    # header and field values: `authorization: x`, `"password": "x"`, `x-api-key=x`, (b'x-api-key', b'x')
    (re.compile(r"""(?ix)(\b(?:authorization|proxy-authorization|x-api-key|api[_-]?key|password
                   |passwd|secret|token|registry_auth|auth)\b['"]?\s*(?:[:=]|,)\s*(?:b['"]|['"])?)
                   (?!(?:b?['"])?(?:bearer\s+|basic\s+)?\[REDACTED\])(?:bearer\s+|basic\s+)?[^'"\s,}&)]+"""), r"\1" + MASK),
    # credentials in URLs: `https://user:pw@host`
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@"), r"\1" + MASK + "@"),
]

_secrets: set[str] = set()
_lock = threading.Lock()


def add_secrets(values: Iterable[str]) -> None:
    """Exact strings (configured keys, registry passwords) masked wherever they appear."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("latin-1")).encode("latin-1")
    if isinstance(value, (dict, list, tuple)):
        text = redact(repr(value))
        return value if text == repr(value) else text
    return value


def _redact_record(record: logging.LogRecord) -> None:
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_value(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_value(v) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


def install() -> None:
    """Wrap the record factory, unless the current one already redacts."""
    with _lock:
        previous = logging.getLogRecordFactory()
        if getattr(previous, "redacts", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        factory.redacts = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
