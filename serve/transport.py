"""The HTTP/1.1 protocol uvicorn runs: its h11 protocol, plus the guards a shared port needs.

- A request head (request line and headers) must arrive within `header_timeout` seconds of the
  connection opening or of its first byte on a kept-alive connection; a connection that sends
  nothing, or dribbles a head byte by byte (slowloris), is closed, so idle sockets cannot pile
  up until real clients starve.
- A head larger than `h11_max_incomplete_event_size` gets 431 (uvicorn answers h11's "buffer
  too long" with 400, and h11 checks only heads that arrive in pieces).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("corral.transport")


def _plain_reply(status: str, text: str) -> bytes:
    """A whole reply written before any request was parsed (h11 cannot answer one yet)."""
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


REQUEST_TIMEOUT = _plain_reply("408 Request Timeout", "request head timeout")
HEAD_TOO_LARGE = _plain_reply("431 Request Header Fields Too Large",
                              "request header fields too large")


LINGER = 2.0  # seconds a refused connection is drained before it is closed


class GuardedH11Protocol(H11Protocol):
    header_timeout: float = 30.0

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limit = config.h11_max_incomplete_event_size
        self.max_head = DEFAULT_MAX_INCOMPLETE_EVENT_SIZE if limit is None else limit
        self._head_timer: asyncio.TimerHandle | None = None
        self._discarding = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._cancel_head_timer()
            self._refuse(HEAD_TOO_LARGE)
            return
        super().data_received(data)
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is in (or the connection is done)
        elif self._head_timer is None:
            self._arm_head_timer()  # a new head begins on a kept-alive connection

    def _head_too_large(self, data: bytes) -> bool:
        # h11 bounds only a head that arrives in pieces; one that comes whole is parsed at any
        # size, so measure the head (buffered bytes plus these, up to the blank line) here.
        buffered = self.conn.trailing_data[0] + data
        end = buffered.find(b"\r\n\r\n")
        return (len(buffered) if end < 0 else end + 4) > self.max_head

    def _arm_head_timer(self) -> None:
        if self.header_timeout > 0 and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # a partial head: say why before closing
            log.info("closed a connection from %s: no request head within %.0f s",
                     self.client, self.header_timeout)
            self._refuse(REQUEST_TIMEOUT)
        else:
            self.transport.close()

    def _refuse(self, reply: bytes) -> None:
        """Answer and close without a reset: closing a socket with unread input sends RST,
        which can destroy the reply before the client reads it. So half-close, drain what
        still comes for a moment, then close."""
        self.transport.write(reply)
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        self.transport.write_eof()
        self._discarding = True
        self.loop.call_later(LINGER, self.transport.close)


def protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's `http=`, with this server's head timeout."""
    return type("CorralH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})
