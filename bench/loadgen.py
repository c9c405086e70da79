"""Closed-loop asyncio load generator: C concurrent streaming clients, each sending its requests
one after another, every request timed chunk by chunk. Bounded by a request count per client
and a wall-clock limit for the whole phase; requests cut off by the limit count as errors.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import httpx

from bench.adapters import Adapter, Prompt
from bench.metrics import PhaseStats, RequestRecord

# Per-client extra body fields (e.g. `format` for half of the clients), by client index.
ExtraFor = Callable[[int], "dict[str, Any] | None"]


@dataclass
class PhaseResult:
    records: list[RequestRecord]
    wall_s: float
    timed_out: bool = False

    def stats(self, system: str, concurrency: int) -> PhaseStats:
        return PhaseStats.from_records(system, concurrency, self.records, self.wall_s)


def make_client(concurrency: int, read_timeout: float = 120.0) -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never sit between us and loopback.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, read=read_timeout),
        limits=httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8),
        trust_env=False,
    )


async def stream_request(
    client: httpx.AsyncClient, url: str, adapter: Adapter, body: dict[str, Any], record: RequestRecord
) -> RequestRecord:
    """Send one streaming request, filling `record` as chunks arrive."""
    try:
        async with client.stream("POST", url, json=body) as response:
            record.status = response.status_code
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", "replace")
                record.error = f"HTTP {response.status_code}: {text[:200]}"
                record.end = time.perf_counter()
                return record
            async for line in response.aiter_lines():
                chunk = adapter.parse_line(line)
                if chunk is None:
                    continue
                now = time.perf_counter()
                if chunk.text:
                    record.token_times.append(now)
                    record.text += chunk.text
                if chunk.error:
                    record.error = chunk.error
                if chunk.done:
                    record.output_tokens = chunk.output_tokens
                    record.final = {k: v for k, v in chunk.final.items() if k != "context"}
                    break
            else:
                record.error = record.error or "stream ended without a final chunk"
    except asyncio.CancelledError:
        record.error = "cut off by the phase time limit"
        raise
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.end = time.perf_counter()
    return record


async def run_phase(
    base_url: str,
    adapter: Adapter,
    *,
    concurrency: int,
    requests_per_client: int,
    prompts: Sequence[Prompt],
    num_predict: int,
    time_limit_s: float,
    seed: int = 0,
    extra_for: ExtraFor | None = None,
    client: httpx.AsyncClient | None = None,
) -> PhaseResult:
    """C clients, each sending `requests_per_client` requests back to back; request n of the
    phase uses prompts[n % len(prompts)] and seed + n."""
    if concurrency < 1 or requests_per_client < 1:
        raise ValueError("concurrency and requests_per_client must be at least 1")
    if not prompts:
        raise ValueError("no prompts")
    url = base_url.rstrip("/") + adapter.path
    records: list[RequestRecord] = []
    own_client = client is None
    http = client or make_client(concurrency)

    async def one_client(index: int) -> None:
        extra = extra_for(index) if extra_for else None
        for j in range(requests_per_client):
            n = index * requests_per_client + j
            body = adapter.body(prompts[n % len(prompts)], num_predict, seed + n, extra)
            record = RequestRecord(start=time.perf_counter(), client=index)
            records.append(record)
            await stream_request(http, url, adapter, body, record)

    start = time.perf_counter()
    tasks = [asyncio.create_task(one_client(i)) for i in range(concurrency)]
    try:
        _, pending = await asyncio.wait(tasks, timeout=time_limit_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        if own_client:
            await http.aclose()
    ends = [r.end for r in records if r.end is not None]
    wall = (max(ends) if ends else time.perf_counter()) - start
    return PhaseResult(records=records, wall_s=wall, timed_out=bool(pending))


async def single_request(
    base_url: str,
    adapter: Adapter,
    prompt: Prompt,
    *,
    num_predict: int,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    time_limit_s: float = 300.0,
    client: httpx.AsyncClient | None = None,
    record: RequestRecord | None = None,
) -> RequestRecord:
    """One streamed request, bounded by `time_limit_s`; pass `record` to watch it while it runs."""
    own_client = client is None
    http = client or make_client(1)
    record = record or RequestRecord(start=time.perf_counter())
    record.start = time.perf_counter()
    body = adapter.body(prompt, num_predict, seed, extra)
    try:
        await asyncio.wait_for(
            stream_request(http, base_url.rstrip("/") + adapter.path, adapter, body, record), time_limit_s
        )
    except asyncio.TimeoutError:
        record.error = f"no answer within {time_limit_s:.0f} s"
    finally:
        if own_client:
            await http.aclose()
    return record
