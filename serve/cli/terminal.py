"""Whether stdin/stdout are terminals: one place, so tests can pretend either way."""

from __future__ import annotations

import sys


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
