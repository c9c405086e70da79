"""Replies in Ollama's shapes: JSON, errors, and NDJSON streams with its error rules.

A stream's first event is awaited before any byte is sent, so an error there keeps its real
status (the `ollama` client calls raise_for_status before reading lines); an error after that is
a final `{"error": ...}` line with status 200 (reference §3).
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Callable

from starlette.responses import Response, StreamingResponse

from registry.errors import APIError
from serve.wire import encode

log = logging.getLogger("corral.serve")

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(encode(obj), status_code=status, media_type=JSON_TYPE)


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def empty_ok() -> Response:
    """Ollama's copy/delete success: 200 with an empty body."""
    return Response(b"", status_code=200)


async def stream_events(
    events: AsyncIterator[dict],
    stream: bool,
    aggregate: Callable[[list[dict]], dict] | None = None,
) -> Response:
    """Reply with `events` as NDJSON (stream) or as one JSON object (the aggregate or last event)."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return json_response({})
    except APIError as err:
        await events.aclose()
        return error_response(err.status, err.message)

    if not stream:
        collected = [first]
        try:
            async for event in events:
                collected.append(event)
        except APIError as err:
            return error_response(err.status, err.message)
        finally:
            await events.aclose()
        return json_response(aggregate(collected) if aggregate else collected[-1])

    async def body() -> AsyncIterator[bytes]:
        try:
            yield encode(first) + b"\n"
            async for event in events:
                yield encode(event) + b"\n"
        except APIError as err:
            yield encode({"error": err.message}) + b"\n"
        except Exception as err:  # a failure mid-stream still ends in Ollama's error line
            log.exception("stream failed")
            yield encode({"error": str(err) or type(err).__name__}) + b"\n"
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type=NDJSON_TYPE)
