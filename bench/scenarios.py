"""The scenario rows the engine's targets name, each measured through Corral's HTTP API.

(a) prefix cache: TTFT of a follow-up chat turn with its history warm vs the same request after
    the cache was cleared. Clearing = unloading the model (`keep_alive: 0`) and loading it again:
    Ollama's API has no "drop the prefix cache" call, and an unload frees every KV block.
(b) TTFT of one request arriving while others decode vs the same kind of request on an idle server.
(c) load time of the model with the converted-weights cache empty vs present (two fresh servers).
(d) aggregate throughput with half the clients sending a JSON-schema `format` vs none.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


from bench.adapters import OllamaChat, OllamaGenerate
from bench.loadgen import make_client, run_phase, single_request
from bench.metrics import PhaseStats, RequestRecord, median
from bench.ollama_ops import load_model, unload_model
from bench.procs import corral_server
from bench.prompts import JSON_PROMPT, JSON_SCHEMA, LIST_PROMPT, LIST_SCHEMA, PromptSource


@dataclass
class ScenarioResult:
    key: str  # "prefix_cache", "busy_ttft", "load_time", "structured"
    title: str
    base_label: str
    base: float | None
    subject_label: str
    subject: float | None
    unit: str
    detail: str = ""
    status: str | None = None  # set when the row could not be measured ("not supported", ...)
    extra: dict = field(default_factory=dict)


def _ttft(record: RequestRecord) -> float | None:
    if not record.ok:
        raise RuntimeError(f"request failed: {record.error}")
    return record.ttft


async def prefix_cache(
    base_url: str, model: str, source: PromptSource, *, reps: int, turns: int, num_predict: int, time_limit_s: float
) -> ScenarioResult:
    chat = OllamaChat(model)
    generate = OllamaGenerate(model)
    warm, cold, warm_evals, cold_evals = [], [], [], []
    deadline = time.perf_counter() + time_limit_s
    async with make_client(1) as client:
        for _ in range(reps):
            history = source.history(turns)
            follow_up = history + [{"role": "user", "content": "Thanks. Summarize all of this in one sentence."}]
            # The turn before: the history up to its last user message, as the client sent it then.
            await _checked(single_request(base_url, chat, history[:-1], num_predict=1, client=client,
                                          time_limit_s=_left(deadline)))
            record = await single_request(base_url, chat, follow_up, num_predict=num_predict, client=client,
                                          time_limit_s=_left(deadline))
            warm.append(_ttft(record))
            warm_evals.append(record.final.get("prompt_eval_count"))
            await unload_model(client, base_url, model)
            await load_model(client, base_url, model, timeout_s=_left(deadline))
            # One unrelated request, so the cold figure holds prefill only, not first-step warm-up.
            await _checked(single_request(base_url, generate, source.prompts(1)[0], num_predict=1, client=client,
                                          time_limit_s=_left(deadline)))
            record = await single_request(base_url, chat, follow_up, num_predict=num_predict, client=client,
                                          time_limit_s=_left(deadline))
            cold.append(_ttft(record))
            cold_evals.append(record.final.get("prompt_eval_count"))
    # prompt_eval_count: the prompt tokens the server evaluated, so a cache hit shows as fewer.
    evals = [median(v for v in values if isinstance(v, (int, float))) for values in (cold_evals, warm_evals)]
    shown = "/".join("?" if v is None else f"{v:.0f}" for v in evals)
    return ScenarioResult(
        "prefix_cache", "Prefix cache: follow-up chat turn TTFT",
        "cold (after unload+reload)", median(cold), "warm history", median(warm), "s",
        detail=f"{reps} rep(s), {turns} turns of history; prompt_eval_count cold/warm {shown}; "
        "cleared by keep_alive:0 then reload",
    )


async def busy_ttft(
    base_url: str, model: str, source: PromptSource, *, others: int, reps: int, num_predict: int,
    background_predict: int, time_limit_s: float,
) -> ScenarioResult:
    generate = OllamaGenerate(model)
    deadline = time.perf_counter() + time_limit_s
    async with make_client(others + 2) as client:
        idle = []
        for prompt in source.prompts(reps):
            idle.append(_ttft(await single_request(base_url, generate, prompt, num_predict=num_predict,
                                                   client=client, time_limit_s=_left(deadline))))
        records = [RequestRecord(start=time.perf_counter()) for _ in range(others)]
        background = [
            asyncio.create_task(single_request(base_url, generate, prompt, num_predict=background_predict,
                                               client=client, time_limit_s=_left(deadline), record=record))
            for prompt, record in zip(source.prompts(others), records)
        ]
        busy, active = [], []
        try:
            await _wait_decoding(background, records, deadline)
            for prompt in source.prompts(reps):
                active.append(sum(not task.done() for task in background))
                busy.append(_ttft(await single_request(base_url, generate, prompt, num_predict=num_predict,
                                                       client=client, time_limit_s=_left(deadline))))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    return ScenarioResult(
        "busy_ttft", f"TTFT while {others} others decode",
        "idle server", median(idle), f"{others} decoding", median(busy), "s",
        detail=f"{reps} probe(s); background streams still running at each probe: {active}",
    )


async def _wait_decoding(tasks: list[asyncio.Task], records: list[RequestRecord], deadline: float) -> None:
    """Wait until every background request streamed its first token (they are decoding then)."""
    while time.perf_counter() < deadline:
        if all(r.token_times for r in records) or any(t.done() for t in tasks):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("background requests never all started decoding")


async def load_time(
    *, model: str, work_dir: Path, log_dir: Path, num_parallel: int, start_timeout_s: float, load_timeout_s: float
) -> ScenarioResult:
    """Two fresh servers on one fresh converted-weights cache: the first load converts the GGUF,
    the second finds the conversion. A fresh process each time, as a restart would see it."""
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work_dir))
    walls, server_side = [], []
    for attempt in ("first", "second"):
        models = Path(tempfile.mkdtemp(prefix=f"models-{attempt}-", dir=work_dir))
        server = corral_server(models_dir=models, cache_dir=cache, log_path=log_dir / f"corral-load-{attempt}.log",
                               num_parallel=num_parallel)
        with server:
            server.wait_ready(timeout_s=start_timeout_s)
            async with make_client(1) as client:
                wall, data = await load_model(client, server.url, model, timeout_s=load_timeout_s)
        walls.append(wall)
        duration = data.get("load_duration")
        server_side.append(duration / 1e9 if isinstance(duration, (int, float)) else None)
    detail = "client wall of the load request"
    if all(s is not None for s in server_side):
        detail += f"; server load_duration {server_side[0]:.2f} s / {server_side[1]:.2f} s"
    return ScenarioResult(
        "load_time", "Model load: converted cache empty vs present",
        "first (cache empty)", walls[0], "second (cache present)", walls[1], "s", detail=detail,
    )


async def structured(
    base_url: str, model: str, source: PromptSource, *, concurrency: int, requests_per_client: int,
    num_predict: int, time_limit_s: float,
) -> tuple[ScenarioResult, list[PhaseStats]]:
    generate = OllamaGenerate(model)
    title = f"Structured output at C={concurrency}"
    probe = await single_request(base_url, generate, f"{source.tag()} {JSON_PROMPT}", num_predict=max(64, num_predict),
                                 extra={"format": JSON_SCHEMA}, time_limit_s=min(time_limit_s, 300))
    if not probe.ok:
        return ScenarioResult("structured", title, "all unconstrained", None, "half with format", None, "tok/s",
                              status="not supported", detail=f"format request failed: {probe.error}"), []
    count = concurrency * requests_per_client
    common = dict(concurrency=concurrency, requests_per_client=requests_per_client, num_predict=num_predict,
                  time_limit_s=time_limit_s / 2)
    plain = await run_phase(base_url, generate, prompts=_list_prompts(source, count), **common)
    mixed = await run_phase(base_url, generate, prompts=_list_prompts(source, count),
                            extra_for=lambda i: {"format": LIST_SCHEMA} if i % 2 == 0 else None, **common)
    plain_stats = plain.stats("corral (no format)", concurrency)
    mixed_stats = mixed.stats("corral (half format)", concurrency)
    constrained = [r for r in mixed.records if r.client % 2 == 0 and r.ok]
    free = [r for r in mixed.records if r.client % 2 == 1 and r.ok]
    return ScenarioResult(
        "structured", title, "all unconstrained", plain_stats.tok_s, "half with JSON schema", mixed_stats.tok_s,
        "tok/s",
        detail=f"probe answer to a closed schema is valid JSON: {'yes' if _is_json(probe.text) else 'NO'}; "
        f"mean tokens per request constrained/free {_mean_tokens(constrained)}/{_mean_tokens(free)}; "
        f"errors {plain_stats.errors}/{mixed_stats.errors}",
    ), [plain_stats, mixed_stats]


def _list_prompts(source: PromptSource, count: int) -> list[str]:
    return [f"{source.tag()} {LIST_PROMPT}" for _ in range(count)]


def _mean_tokens(records: list[RequestRecord]) -> str:
    return f"{sum(r.tokens for r in records) / len(records):.0f}" if records else "–"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


async def _checked(awaitable) -> RequestRecord:
    record = await awaitable
    if not record.ok:
        raise RuntimeError(f"request failed: {record.error}")
    return record


def _left(deadline: float) -> float:
    left = deadline - time.perf_counter()
    if left <= 0:
        raise TimeoutError("scenario time limit reached")
    return left


def failed(key: str, title: str, exc: BaseException) -> ScenarioResult:
    return ScenarioResult(key, title, "", None, "", None, "", status=f"failed: {type(exc).__name__}: {exc}"[:300])
