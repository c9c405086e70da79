"""`POST /api/generate` and `POST /api/chat` (reference §2.1, §2.2).

Both share one flow: decode, resolve the model, the unload shortcut, capability checks, a lease
on a loaded instance, the load-only reply, then the prompt joins the engine and its outputs are
written as NDJSON chunks (or aggregated). The lease ends when the stream ends, so keep_alive
counts from the last request's finish; a client that goes away aborts its sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.detokenizer import token_bytes
from backends.parsers import ChatOutputParser, ParsedDelta
from backends.structured import parse_format
from registry.errors import APIError
from registry.model import Model, ModelNotFoundError, get_model
from registry.names import parse_name
from scheduler.residency import Lease
from serve import requests as req
from serve.access_log import AccessRecord, access_record
from serve.options import Options, resolve_options
from serve.prompts import (chat_messages, model_template, native_chat_template, render_chat,
                          render_generate)
from serve.responses import json_response, stream_events
from serve.wire import decode_body, model_field, now_utc


@dataclass
class Turn:
    """What generate and chat have in common once the request is understood."""

    body: dict[str, Any]
    name: str  # as the client sent it: echoed in every reply
    model: Model
    options: Options
    keep_alive: float | None
    think: bool | str | None
    started: int  # perf_counter_ns at arrival
    access: AccessRecord | None = None  # the access log's line for this request


async def _resolve(request: Request, struct: str, fields: dict, empty_status: int,
                   empty_message: str) -> tuple[dict, str, Model, float | None, bool | str | None]:
    body = decode_body(await request.body(), struct, fields)
    req.top_logprobs(body)
    name = model_field(body)
    if not name:
        raise APIError(empty_status, empty_message)
    if not parse_name_valid(name):
        raise APIError(400, "invalid model name")
    keep_alive = req.keep_alive(body)
    think = req.think(body)
    store = request.app.state.services.store
    record = access_record(request)
    if record is not None:
        record.model = name
    try:
        model = await run_in_threadpool(get_model, store, name)
    except ModelNotFoundError:
        raise APIError(404, f"model '{name}' not found") from None
    return body, name, model, keep_alive, think


def _check_context(context: list[int], vocab_size: int) -> None:
    """A token id the embedding has no row for would fail the whole engine step, and with it
    every request batched alongside; refuse it here, before it joins a batch."""
    bad = next((t for t in context if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise APIError(400, f"context token {bad} is outside the vocabulary (0..{vocab_size - 1})")


def parse_name_valid(name: str) -> bool:
    try:
        return parse_name(name).is_valid()
    except APIError:
        return False


def _check_capabilities(model: Model, needed: list[str], verb: str, think: bool | str | None,
                        name: str) -> bool | str | None:
    caps = model.capabilities
    if "completion" not in caps:
        raise APIError(400, f'"{name}" does not support {verb}')
    missing = [c for c in needed if c not in caps]
    if missing:
        raise APIError(400, "\n".join(f"{model.name} does not support {c}" for c in missing))
    if "thinking" in caps:
        return True if think is None else think
    if think not in (None, False):
        raise APIError(400, f'"{name}" does not support thinking')
    return None


def _apply_format_and_logprobs(body: dict, options: Options) -> None:
    """`format` becomes the request's grammar; an invalid one is a 400 before any load
    (current Ollama fails at completion time with a 500; the early 400 is older Ollama's)."""
    options.sampling.format = parse_format(body.get("format"))
    options.sampling.logprobs = bool(body.get("logprobs"))
    options.sampling.top_logprobs = req.top_logprobs(body) if options.sampling.logprobs else 0


def _token_logprob(tokenizer: Any, token_id: int, logprob: float) -> dict:
    raw = token_bytes(tokenizer, token_id)
    out = {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob}
    if raw:
        out["bytes"] = list(raw)
    return out


def _wire_logprobs(tokenizer: Any, logprobs: list, skip: set[int]) -> list[dict]:
    """The engine's Logprobs as Ollama's (§2.9); end-of-sequence tokens are not in the text,
    so they have none."""
    wire = []
    for lp in logprobs:
        if lp.token_id in skip:
            continue
        entry = _token_logprob(tokenizer, lp.token_id, lp.logprob)
        if lp.top:
            entry["top_logprobs"] = [_token_logprob(tokenizer, t, v) for t, v in lp.top]
        wire.append(entry)
    return wire


def _metrics(final: Any, started: int, loaded: int) -> dict[str, int]:
    out = {
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": loaded - started,
        "prompt_eval_count": final.prompt_eval_count,
        "prompt_eval_duration": final.prompt_eval_duration,
        "eval_count": final.eval_count,
        "eval_duration": final.eval_duration,
    }
    return {k: v for k, v in out.items() if v}


async def _run(
    turn: Turn,
    lease: Lease,
    prompt_tokens: list[int],
    parser: ChatOutputParser,
    chunks: Callable[[ParsedDelta], list[dict]],
    final_extra: Callable[[list[int]], dict],
) -> AsyncIterator[dict]:
    """Engine outputs as reply chunks; always releases the lease and aborts on early exit."""
    loaded_at = time.perf_counter_ns()
    instance = lease.instance
    try:
        spec = turn.options.sampling.format
        if spec is not None:  # compile (or find in the cache) off the event loop
            await run_in_threadpool(instance.engine.grammars.compile, spec)
        stream = instance.engine.add_request(
            prompt_tokens, turn.options.sampling, num_keep=turn.options.num_keep)
    except BaseException:
        await lease.release()
        raise
    output_ids: list[int] = []
    eos = instance.engine.eos_token_ids
    # Logprobs ride on the next chunk written: text held back (a stop-string prefix, a tool
    # tag) delays its tokens' logprobs with it.
    pending: list[dict] = []
    access = turn.access
    try:
        async for out in stream:
            if access is not None and access.ttft is None:
                access.ttft = (time.perf_counter_ns() - turn.started) / 1e9
            output_ids += [t for t in out.token_ids if t not in eos]
            if out.logprobs:
                pending += _wire_logprobs(instance.tokenizer, out.logprobs, eos)
            delta = parser.add(out.text) if out.text else ParsedDelta()
            if not out.finished:
                for i, chunk in enumerate(chunks(delta) if delta else ()):
                    if i == 0 and pending:
                        chunk["logprobs"], pending = pending, []
                    yield chunk
                continue
            tail = parser.finish()
            delta = ParsedDelta(delta.thinking + tail.thinking, delta.content + tail.content,
                                delta.tool_calls + tail.tool_calls)
            for i, chunk in enumerate(chunks(delta) if delta else ()):
                if i == 0 and pending:
                    chunk["logprobs"], pending = pending, []
                yield chunk
            last = chunks(ParsedDelta())[0]
            if pending:
                last["logprobs"] = pending
            last.update(done=True, done_reason=out.done_reason or "stop")
            last.update(final_extra(output_ids))
            last.update(_metrics(out, turn.started, loaded_at))
            if access is not None:
                access.tokens_in, access.tokens_out = out.prompt_eval_count, out.eval_count
            yield last
    finally:
        await stream.aclose()
        await lease.release()


def _with_logprobs(out: dict, replies: list[dict]) -> dict:
    """A non-streamed reply carries every chunk's logprobs, in order."""
    logprobs = [lp for c in replies for lp in c.get("logprobs", ())]
    out.pop("logprobs", None)
    if logprobs:
        out["logprobs"] = logprobs
    return out


def _debug_reply(name: str, rendered: str, images: list | None, **fields: Any) -> dict:
    """`_debug_render_only`: the rendered prompt instead of a generation."""
    return {"model": name, "created_at": now_utc(), **fields, "done": True,
            "_debug_info": {"rendered_template": rendered, "image_count": len(images or [])}}


def _done(name: str, reason: str, **fields: Any) -> dict:
    return {"model": name, "created_at": now_utc(), **fields, "done": True, "done_reason": reason}


async def generate(request: Request) -> Response:
    started = time.perf_counter_ns()
    services = request.app.state.services
    body, name, model, keep_alive, think = await _resolve(
        request, "GenerateRequest", req.GENERATE_FIELDS, 404, "model '' not found")
    prompt = body.get("prompt") or ""
    if not prompt and keep_alive == 0:
        await services.unload(model)
        return json_response(_done(name, "unload", response=""))
    raw = bool(body.get("raw"))
    if raw and (body.get("template") or body.get("system") or body.get("context")):
        raise APIError(400, "raw mode does not support template, system, or context")
    needed = (["insert"] if body.get("suffix") else []) + (["vision"] if body.get("images") else [])
    think = _check_capabilities(model, needed, "generate", think, name)
    options = resolve_options(model.params, body.get("options"), services.settings.context_length,
                              **services.settings.option_ceilings())
    _apply_format_and_logprobs(body, options)
    lease = await services.acquire(model, options.runner, keep_alive)
    if not prompt and not body.get("suffix"):
        await lease.release()
        return json_response(_done(name, "load", response=""))
    try:
        tokenizer = lease.instance.tokenizer
        text = prompt if raw else render_generate(
            model, prompt=prompt, suffix=body.get("suffix") or "", system=body.get("system"),
            template=body.get("template"), use_model_messages=not body.get("context"), think=think)
        context = body.get("context") or []
        _check_context(context, lease.instance.vocab_size)
        prompt_tokens = list(context) + tokenizer.encode(text, add_special_tokens=not context)
    except BaseException:
        await lease.release()
        raise
    if body.get("_debug_render_only"):
        await lease.release()
        return json_response(_debug_reply(name, text, body.get("images"), response=""))
    turn = Turn(body, name, model, options, keep_alive, think, started, access_record(request))
    parser = ChatOutputParser(model_template(model, body.get("template")), None, think, text)

    def chunks(delta: ParsedDelta) -> list[dict]:
        chunk = {"model": name, "created_at": now_utc(), "response": delta.content, "done": False}
        if delta.thinking:
            chunk["thinking"] = delta.thinking
        return [chunk]

    def final_extra(output_ids: list[int]) -> dict:
        return {} if raw else {"context": prompt_tokens + output_ids}

    def aggregate(replies: list[dict]) -> dict:
        out = {**replies[-1], "response": "".join(c.get("response", "") for c in replies)}
        thinking = "".join(c.get("thinking", "") for c in replies)
        if thinking:
            out["thinking"] = thinking
        return _with_logprobs(out, replies)

    events = _run(turn, lease, prompt_tokens, parser, chunks, final_extra)
    return await stream_events(events, body.get("stream") is not False, aggregate,
                               request.receive)


async def chat(request: Request) -> Response:
    started = time.perf_counter_ns()
    services = request.app.state.services
    body, name, model, keep_alive, think = await _resolve(
        request, "ChatRequest", req.CHAT_FIELDS, 400, "model is required")
    messages = req.messages(body)
    if not messages and keep_alive == 0:
        await services.unload(model)
        return json_response(_done(name, "unload", message={"role": "assistant", "content": ""}))
    needed = (["tools"] if body.get("tools") else []) + (
        ["vision"] if any(m.get("images") for m in messages) else [])
    think = _check_capabilities(model, needed, "chat", think, name)
    options = resolve_options(model.params, body.get("options"), services.settings.context_length,
                              **services.settings.option_ceilings())
    _apply_format_and_logprobs(body, options)
    lease = await services.acquire(model, options.runner, keep_alive)
    if not messages:
        await lease.release()
        return json_response(_done(name, "load", message={"role": "assistant", "content": ""}))
    try:
        tokenizer = lease.instance.tokenizer
        text, prompt_tokens = render_chat(
            model, chat_messages(model, messages), tokenizer,
            num_ctx=lease.instance.context_length, truncate=body.get("truncate") is not False,
            tools=body.get("tools") or None, think=think)
    except BaseException:
        await lease.release()
        raise
    if body.get("_debug_render_only"):
        await lease.release()
        images = [i for m in messages for i in m.get("images") or []]
        return json_response(_debug_reply(name, text, images,
                                          message={"role": "assistant", "content": ""}))
    turn = Turn(body, name, model, options, keep_alive, think, started, access_record(request))
    parser = ChatOutputParser(None if native_chat_template(model) else model_template(model),
                              body.get("tools") or None, think, text)

    def reply(message: dict) -> dict:
        return {"model": name, "created_at": now_utc(), "message": message, "done": False}

    def chunks(delta: ParsedDelta) -> list[dict]:
        message = delta.message()
        calls = message.pop("tool_calls", None)
        out = [reply(message)] if (delta.content or delta.thinking or not calls) else []
        if calls:  # Ollama sends tool calls in a chunk of their own, with empty content
            out.append(reply({"role": "assistant", "content": "", "tool_calls": calls}))
        return out

    def aggregate(replies: list[dict]) -> dict:
        message = {"role": "assistant",
                   "content": "".join(c["message"]["content"] for c in replies)}
        thinking = "".join(c["message"].get("thinking", "") for c in replies)
        calls = [call for c in replies for call in c["message"].get("tool_calls", [])]
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        return _with_logprobs({**replies[-1], "message": message}, replies)

    events = _run(turn, lease, prompt_tokens, parser, chunks, lambda ids: {})
    return await stream_events(events, body.get("stream") is not False, aggregate,
                               request.receive)


routes = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
]
