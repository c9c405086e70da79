"""Replies in Ollama's shapes: JSON, errors, and NDJSON streams with its error rules.

A stream's first event is awaited before any byte is sent, so an error there keeps its real
status (the `ollama` client calls raise_for_status before reading lines); an error after that is
a final `{"error": ...}` line with status 200 (reference §3).

Until the reply is returned (the wait for the first event, and a whole non-streamed reply) the
ASGI receive channel is watched for `http.disconnect`: a client killed with kill -9, a proxy
that resets the connection or an SDK's close() cancels the wait, which closes the events and
aborts the engine sequence. Once a StreamingResponse is returned, Starlette watches instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from registry.errors import APIError, no_space
from serve.wire import encode

log = logging.getLogger("corral.serve")

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"

T = TypeVar("T")


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(encode(obj), status_code=status, media_type=JSON_TYPE)


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def empty_ok() -> Response:
    """Ollama's copy/delete success: 200 with an empty body."""
    return Response(b"", status_code=200)


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone (the request body was already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(work: Awaitable[T], receive: Receive | None) -> T:
    """`await work`, unless the client disconnects first: then `work` is cancelled (which
    aborts the sequence it waits on) and ClientDisconnect is raised."""
    if receive is None:
        return await work
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself cancelled (server shutdown)
        task.cancel()
        raise
    finally:
        watcher.cancel()  # the receive channel is Starlette's again once a stream is returned
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # let its finally blocks run
    raise ClientDisconnect()


async def _collect(first: dict, events: AsyncIterator[dict]) -> list[dict]:
    collected = [first]
    async for event in events:
        collected.append(event)
    return collected


async def stream_events(
    events: AsyncIterator[dict],
    stream: bool,
    aggregate: Callable[[list[dict]], dict] | None = None,
    receive: Receive | None = None,
) -> Response:
    """Reply with `events` as NDJSON (stream) or as one JSON object (the aggregate or last event).

    With `receive` (the request's ASGI channel), a client that goes away before the reply is
    returned closes `events` at once instead of when the engine finishes."""
    try:
        first = await unless_disconnected(anext(events), receive)
    except StopAsyncIteration:
        return json_response({})
    except APIError as err:
        await events.aclose()
        return error_response(err.status, err.message)
    except ClientDisconnect:
        await events.aclose()
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    if not stream:
        try:
            collected = await unless_disconnected(_collect(first, events), receive)
        except APIError as err:
            return error_response(err.status, err.message)
        except ClientDisconnect:
            return Response(status_code=499)
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
            if (full := no_space(err)) is not None:
                log.error("stream failed: %s", err)
                yield encode({"error": full.message}) + b"\n"
                return
            log.exception("stream failed")
            yield encode({"error": str(err) or type(err).__name__}) + b"\n"
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type=NDJSON_TYPE)
