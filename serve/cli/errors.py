"""How the CLI reports: `Error: <text>` failures and plain stdout/stderr writes."""

from __future__ import annotations

import sys

CONNECT_ERROR = "could not connect to corral server, is it running?"


class CLIError(Exception):
    """A failure reported as `Error: <text>` with exit status 1."""


def _out(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def _err(text: str = "", end: str = "\n") -> None:
    sys.stderr.write(text + end)
    sys.stderr.flush()
