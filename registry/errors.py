"""The one error type every layer raises for a client-visible failure.

`serve` turns it into Ollama's wire form: HTTP `status` with `{"error": message}` before the
first byte of a stream, or an `{"error": message}` line after it.
"""

from __future__ import annotations

import errno


class APIError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r})"


def not_found(message: str) -> APIError:
    return APIError(404, message)


def bad_request(message: str) -> APIError:
    return APIError(400, message)


NO_SPACE = "no space left on device"


def no_space(err: BaseException) -> APIError | None:
    """A full disk as Corral answers it (507, Ollama has no code for it); None for anything else.
    A 507 tells the operator what to fix, where a bare 500 reads as a broken server."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return APIError(507, NO_SPACE)
    return None
