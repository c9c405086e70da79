"""The one error type every layer raises for a client-visible failure.

`serve` turns it into Ollama's wire form: HTTP `status` with `{"error": message}` before the
first byte of a stream, or an `{"error": message}` line after it.
"""

from __future__ import annotations


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
