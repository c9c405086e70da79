"""A fixture of the server side: a tiny Starlette app that streams fake tokens with small sleeps,
in Ollama's NDJSON shape (`/api/generate`, `/api/chat`) and llama-server's SSE shape
(`/completion`). The load generator and the report pipeline are the units under test.

Also runnable as a stand-in server binary: `python fakes.py --port N ...` (llama-server's
arguments) or `python fakes.py serve` with OLLAMA_HOST set (`corral serve`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

JSON_ANSWER = ['{"name": ', '"Ada", ', '"age": ', '36, ', '"hobbies": ', '["chess"]', "}"]


@dataclass
class FakeState:
    itl: float = 0.002
    cold_ttft: float = 0.03
    warm_ttft: float = 0.005
    reject_format: bool = False
    loaded: bool = False
    adapters: set[str] = field(default_factory=set)  # adapter models created, then loaded
    active: int = 0
    seen_prompts: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)


def _render(messages: list[dict[str, str]]) -> str:
    return "".join(f"<{m['role']}>{m['content']}\n" for m in messages)


def build_app(state: FakeState | None = None) -> Starlette:
    state = state or FakeState()

    def ttft_for(prompt: str) -> float:
        # A prefix cache in miniature: a prompt extending one seen since the last load is warm.
        warm = any(prompt.startswith(seen) for seen in state.seen_prompts)
        state.seen_prompts.append(prompt)
        return (state.warm_ttft if warm else state.cold_ttft) * (1 + state.active / 4)

    def pieces(body: dict[str, Any], n: int) -> list[str]:
        if "format" in body:
            return JSON_ANSWER[:n]
        return [f"t{i} " for i in range(n)]

    async def ollama_stream(body: dict[str, Any], prompt: str, chat: bool):
        n = int((body.get("options") or {}).get("num_predict", 8))
        delay = ttft_for(prompt)
        state.active += 1
        try:
            await asyncio.sleep(delay)
            texts = pieces(body, n)
            for text in texts:
                part = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
                yield json.dumps({"model": body["model"], "done": False, **part}) + "\n"
                await asyncio.sleep(state.itl)
            final = {"model": body["model"], "done": True, "done_reason": "length", "eval_count": len(texts),
                     "prompt_eval_count": len(prompt.split()), "context": [1, 2, 3]}
            final.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
            yield json.dumps(final) + "\n"
        finally:
            state.active -= 1

    def lifecycle(body: dict[str, Any]) -> JSONResponse:
        if body.get("keep_alive") == 0:
            state.loaded = False
            state.seen_prompts.clear()
            return JSONResponse({"model": body["model"], "response": "", "done": True, "done_reason": "unload"})
        state.loaded = True
        if body["model"] in state.adapters:
            state.adapters.add(body["model"] + "@loaded")
        return JSONResponse({"model": body["model"], "response": "", "done": True, "done_reason": "load",
                             "load_duration": 1_000_000})

    async def generate(request: Request):
        body = await request.json()
        state.bodies.append(body)
        if not body.get("prompt"):
            return lifecycle(body)
        if "format" in body and state.reject_format:
            return JSONResponse({"error": "format is not supported"}, status_code=400)
        if body["prompt"].endswith("FAIL"):
            async def failing():
                yield json.dumps({"model": body["model"], "response": "x", "done": False}) + "\n"
                yield json.dumps({"error": "engine fell over"}) + "\n"
            return StreamingResponse(failing(), media_type="application/x-ndjson")
        return StreamingResponse(ollama_stream(body, body["prompt"], chat=False), media_type="application/x-ndjson")

    async def chat(request: Request):
        body = await request.json()
        state.bodies.append(body)
        if not body.get("messages"):
            return lifecycle(body)
        return StreamingResponse(ollama_stream(body, _render(body["messages"]), chat=True),
                                 media_type="application/x-ndjson")

    async def slow(request: Request):
        async def stream():
            for i in range(60):
                yield json.dumps({"model": "m", "response": f"s{i}", "done": False}) + "\n"
                await asyncio.sleep(0.5)
        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def completion(request: Request):
        body = await request.json()
        state.bodies.append(body)
        n = int(body.get("n_predict", 8))

        async def stream():
            await asyncio.sleep(state.cold_ttft)
            for i in range(n):
                yield f"data: {json.dumps({'content': f't{i} ', 'stop': False})}\n\n"
                await asyncio.sleep(state.itl)
            final = {"content": "", "stop": True, "tokens_predicted": n, "timings": {"predicted_n": n}}
            yield f"data: {json.dumps(final)}\n\n"
        return StreamingResponse(stream(), media_type="text/event-stream")

    async def ps(request: Request):
        if not state.loaded:
            return JSONResponse({"models": []})
        adapters = [{"name": m[: -len("@loaded")], "size": 2**20} for m in state.adapters if m.endswith("@loaded")]
        return JSONResponse({"models": [{"name": "gemma3:270m", "model": "gemma3:270m", "size": 2**30}, *adapters]})

    async def show(request: Request):
        return JSONResponse({"model_info": {"general.architecture": "llama", "llama.block_count": 1},
                             "tensors": [{"name": "blk.0.attn_q.weight", "type": "F16", "shape": [8, 16]}]})

    async def blob(request: Request):
        await request.body()
        return PlainTextResponse("", status_code=201)

    async def create(request: Request):
        state.adapters.add((await request.json())["model"])
        return JSONResponse({"status": "success"})

    async def root(request: Request):
        return PlainTextResponse("Ollama is running")

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[
        Route("/", root), Route("/health", health), Route("/api/ps", ps), Route("/api/show", show, methods=["POST"]),
        Route("/api/blobs/{digest}", blob, methods=["POST"]), Route("/api/create", create, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]), Route("/api/chat", chat, methods=["POST"]),
        Route("/slow/api/generate", slow, methods=["POST"]), Route("/completion", completion, methods=["POST"]),
    ])
    app.state.fake = state
    return app


if __name__ == "__main__":
    import uvicorn

    import os

    args = sys.argv[1:]
    if "--port" in args:  # as llama-server
        port = int(args[args.index("--port") + 1])
    else:  # as `corral serve`
        port = int(os.environ["OLLAMA_HOST"].rsplit(":", 1)[1])
    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="warning")
