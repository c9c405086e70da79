"""generate, chat, embed and embeddings through the official `ollama` client on the real models."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import ollama
import pytest

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "num_predict": 8}


def test_generate_streamed_and_not(ollama_client):
    whole = ollama_client.generate(model="gemma3:270m", prompt="The capital of France is",
                                   options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.response
    assert whole.eval_count and whole.prompt_eval_count and whole.total_duration
    assert whole.context and len(whole.context) >= whole.prompt_eval_count
    chunks = list(ollama_client.generate(model="gemma3:270m", prompt="The capital of France is",
                                         options=GREEDY, stream=True))
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks) == whole.response  # greedy: same text


def test_chat_streamed_and_not(ollama_client):
    messages = [{"role": "user", "content": "Name a color."}]
    whole = ollama_client.chat(model="gemma3:270m", messages=messages, options=GREEDY)
    assert whole.message.role == "assistant" and whole.message.content
    chunks = list(ollama_client.chat(model="gemma3:270m", messages=messages, options=GREEDY,
                                     stream=True))
    assert chunks[-1].done and chunks[-1].eval_count == whole.eval_count
    assert "".join(c.message.content for c in chunks) == whole.message.content


def test_num_predict_yields_exactly_that_many_tokens(ollama_client):
    r = ollama_client.generate(model="gemma3:270m", prompt="Count: one, two,",
                               options={"num_predict": 10, "temperature": 0.9, "seed": 1})
    assert r.eval_count == 10 and r.done_reason == "length"


def test_same_seed_same_text(ollama_client):
    opts = {"temperature": 0.9, "top_k": 40, "seed": 42, "num_predict": 16}
    a = ollama_client.generate(model="gemma3:270m", prompt="Once upon a time", options=opts)
    b = ollama_client.generate(model="gemma3:270m", prompt="Once upon a time", options=opts)
    assert a.response == b.response


def test_embed_and_legacy_embeddings(ollama_client):
    r = ollama_client.embed(model="all-minilm", input=[
        "The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply."])
    cat, kitten, stocks = r.embeddings
    assert len(cat) == 384 and r.prompt_eval_count > 0
    assert math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-4)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b))

    assert cos(cat, kitten) > cos(cat, stocks) + 0.2
    short = ollama_client.embed(model="all-minilm", input="a cat", dimensions=8).embeddings[0]
    assert len(short) == 8 and math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-4)
    legacy = ollama_client.embeddings(model="all-minilm", prompt="The cat sits on the mat.")
    norm = math.sqrt(sum(x * x for x in legacy.embedding))
    assert norm > 1.5  # not normalized
    assert all(math.isclose(x / norm, y, abs_tol=1e-5) for x, y in zip(legacy.embedding, cat))
    assert ollama_client.embed(model="all-minilm", input=[]).embeddings == []


def test_load_and_unload_replies(live_server):
    url = live_server.url
    r = httpx.post(url + "/api/generate", json={"model": "gemma3:270m"}, timeout=120).json()
    assert (r["done"], r["done_reason"], r["response"]) == (True, "load", "")
    r = httpx.post(url + "/api/chat", json={"model": "gemma3:270m", "messages": []},
                   timeout=120).json()
    assert r["done_reason"] == "load" and r["message"] == {"role": "assistant", "content": ""}
    ps = {m["name"]: m for m in httpx.get(url + "/api/ps").json()["models"]}
    assert ps["gemma3:270m"]["context_length"] == 4096
    r = httpx.post(url + "/api/generate", json={"model": "gemma3:270m", "keep_alive": 0}).json()
    assert r["done_reason"] == "unload"

    def loaded():
        return {m["name"] for m in httpx.get(url + "/api/ps").json()["models"]}

    for _ in range(100):
        if "gemma3:270m" not in loaded():
            break
        asyncio.run(asyncio.sleep(0.1))
    assert "gemma3:270m" not in loaded()


@pytest.mark.parametrize("path,body,status,error", [
    ("/api/generate", {"model": ""}, 404, "model '' not found"),
    ("/api/chat", {"model": ""}, 400, "model is required"),
    ("/api/embed", {"model": ""}, 404, "model '' not found"),
    ("/api/embeddings", {"model": ""}, 400, "model is required"),
    ("/api/generate", {"model": "nope"}, 404, "model 'nope' not found"),
    ("/api/chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
    ("/api/embed", {"model": "nope", "input": "x"}, 404,
     'model "nope" not found, try pulling it first'),
    ("/api/generate", {"model": "gemma3:270m", "keep_alive": "300"}, 400,
     'time: missing unit in duration "300"'),
    ("/api/generate", {"model": "gemma3:270m", "top_logprobs": 21}, 400,
     "top_logprobs must be between 0 and 20"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "x", "raw": True, "system": "s"}, 400,
     "raw mode does not support template, system, or context"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "x", "images": ["aGk="]}, 400,
     "registry.ollama.ai/library/gemma3:270m does not support vision"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "x", "think": True}, 400,
     '"gemma3:270m" does not support thinking'),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "x", "think": "extreme"}, 400,
     'invalid think value: "extreme" (must be "high", "medium", "low", "max", true, or false)'),
    ("/api/chat", {"model": "gemma3:270m", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "registry.ollama.ai/library/gemma3:270m does not support tools"),
    ("/api/embed", {"model": "all-minilm", "input": 5}, 400, "invalid input type"),
    # Ollama answers this client mistake with 500; Corral with 400 and the same text
    ("/api/generate", {"model": "gemma3:270m", "prompt": "x",
                       "options": {"temperature": "hot"}}, 400,
     'option "temperature" must be of type float32'),
    ("/api/generate", {"model": "gemma3:270m", "prompt": 3}, 400,
     "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string"),
])
def test_bad_requests(live_server, path, body, status, error):
    r = httpx.post(live_server.url + path, json=body, timeout=120)
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_streamed_error_before_first_byte_keeps_status(ollama_client):
    with pytest.raises(ollama.ResponseError) as err:
        list(ollama_client.generate(model="missing-model", prompt="x", stream=True))
    assert err.value.status_code == 404


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


async def _stream(client: httpx.AsyncClient, url: str, i: int, disconnect: bool) -> str:
    body = {"model": "gemma3:270m", "prompt": f"Story {i}: once upon a time",
            "options": {"temperature": 0.7, "seed": i, "num_predict": 12}}
    text = ""
    async with client.stream("POST", url + "/api/generate", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            chunk = json.loads(line)
            assert "error" not in chunk, chunk
            text += chunk["response"]
            if disconnect and len(text) > 3:
                return "disconnected"
            if chunk["done"]:
                assert chunk["eval_count"] == 12 and chunk["done_reason"] == "length"
                return "done"
    return "cut"


def test_32_concurrent_streams_with_disconnects(live_server):
    async def run():
        async with httpx.AsyncClient(timeout=300) as client:
            return await asyncio.gather(*[
                _stream(client, live_server.url, i, disconnect=i % 8 == 3) for i in range(32)])

    results = asyncio.run(run())
    assert results.count("done") == 28 and results.count("disconnected") == 4
    for _ in range(50):  # the aborted sequences' blocks come back within a step or two
        metrics = httpx.get(live_server.url + "/metrics").text
        if _metric(metrics, "corral_kv_blocks_free") == _metric(metrics, "corral_kv_blocks_total"):
            break
        asyncio.run(asyncio.sleep(0.2))
    assert _metric(metrics, "vllm:num_requests_running") == 0
    assert _metric(metrics, "corral_model_requests_in_flight") == 0
    assert _metric(metrics, "corral_kv_blocks_free") == _metric(metrics, "corral_kv_blocks_total")


def test_quantized_safetensors_model(ollama_client):
    """create's quantize is recorded for a safetensors model and applied (bitsandbytes) at load."""
    assert ollama_client.create(model="minilm-q8", from_="all-minilm", quantize="q8_0",
                                stream=False).status == "success"
    try:
        assert ollama_client.show("minilm-q8").details.quantization_level == "Q8_0"
        text = ["The cat sits on the mat."]
        full = ollama_client.embed(model="all-minilm", input=text).embeddings[0]
        quant = ollama_client.embed(model="minilm-q8", input=text).embeddings[0]
        assert len(quant) == 384 and quant != full
        assert sum(a * b for a, b in zip(full, quant)) > 0.95
    finally:
        ollama_client.delete("minilm-q8")
