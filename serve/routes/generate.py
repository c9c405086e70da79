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

from backends.parsers import ChatOutputParser, ParsedDelta
from registry.errors import APIError
from registry.model import Model, ModelNotFoundError, get_model
from registry.names import parse_name
from scheduler.residency import Lease
from serve import requests as req
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
    try:
        model = await run_in_threadpool(get_model, store, name)
    except ModelNotFoundError:
        raise APIError(404, f"model '{name}' not found") from None
    return body, name, model, keep_alive, think


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
        stream = instance.engine.add_request(
            prompt_tokens, turn.options.sampling, num_keep=turn.options.num_keep)
    except BaseException:
        await lease.release()
        raise
    output_ids: list[int] = []
    try:
        async for out in stream:
            output_ids += [t for t in out.token_ids if t not in instance.engine.eos_token_ids]
            delta = parser.add(out.text) if out.text else ParsedDelta()
            if not out.finished:
                for chunk in chunks(delta) if delta else ():
                    yield chunk
                continue
            tail = parser.finish()
            delta = ParsedDelta(delta.thinking + tail.thinking, delta.content + tail.content,
                                delta.tool_calls + tail.tool_calls)
            for chunk in chunks(delta) if delta else ():
                yield chunk
            last = chunks(ParsedDelta())[0]
            last.update(done=True, done_reason=out.done_reason or "stop")
            last.update(final_extra(output_ids))
            last.update(_metrics(out, turn.started, loaded_at))
            yield last
    finally:
        await stream.aclose()
        await lease.release()


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
    options = resolve_options(model.params, body.get("options"), services.settings.context_length)
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
        prompt_tokens = list(context) + tokenizer.encode(text, add_special_tokens=not context)
    except BaseException:
        await lease.release()
        raise
    if body.get("_debug_render_only"):
        await lease.release()
        return json_response(_debug_reply(name, text, body.get("images"), response=""))
    turn = Turn(body, name, model, options, keep_alive, think, started)
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
        return out

    events = _run(turn, lease, prompt_tokens, parser, chunks, final_extra)
    return await stream_events(events, body.get("stream") is not False, aggregate)


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
    options = resolve_options(model.params, body.get("options"), services.settings.context_length)
    lease = await services.acquire(model, options.runner, keep_alive)
    if not messages:
        await lease.release()
        return json_response(_done(name, "load", message={"role": "assistant", "content": ""}))
    try:
        tokenizer = lease.instance.tokenizer
        text = render_chat(
            model, chat_messages(model, messages), tokenizer,
            num_ctx=lease.instance.context_length, truncate=body.get("truncate") is not False,
            tools=body.get("tools") or None, think=think)
        prompt_tokens = tokenizer.encode(text)
    except BaseException:
        await lease.release()
        raise
    if body.get("_debug_render_only"):
        await lease.release()
        images = [i for m in messages for i in m.get("images") or []]
        return json_response(_debug_reply(name, text, images,
                                          message={"role": "assistant", "content": ""}))
    turn = Turn(body, name, model, options, keep_alive, think, started)
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
        return {**replies[-1], "message": message}

    events = _run(turn, lease, prompt_tokens, parser, chunks, lambda ids: {})
    return await stream_events(events, body.get("stream") is not False, aggregate)


routes = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
]
