from __future__ import annotations

import json

import pytest

from bench.adapters import GEMMA_TURN, LlamaCompletion, OllamaChat, OllamaGenerate


def test_ollama_generate_body() -> None:
    body = OllamaGenerate("gemma3:270m").body("hi", 64, 7, {"format": "json"})
    assert body == {"model": "gemma3:270m", "prompt": "hi", "stream": True, "format": "json",
                    "options": {"temperature": 0, "num_predict": 64, "seed": 7}}
    with pytest.raises(TypeError):
        OllamaGenerate("m").body([{"role": "user", "content": "x"}], 1, 0)


def test_ollama_generate_chunks() -> None:
    adapter = OllamaGenerate("m")
    assert adapter.parse_line("") is None
    chunk = adapter.parse_line(json.dumps({"response": "Hel", "done": False}))
    assert (chunk.text, chunk.done, chunk.output_tokens) == ("Hel", False, None)
    final = adapter.parse_line(json.dumps({"response": "", "done": True, "eval_count": 12, "eval_duration": 5}))
    assert final.done and final.output_tokens == 12 and final.final["eval_duration"] == 5
    error = adapter.parse_line(json.dumps({"error": "model not found"}))
    assert error.error == "model not found" and error.done
    assert adapter.parse_line("not json").error.startswith("undecodable")


def test_ollama_chat_body_and_chunks() -> None:
    adapter = OllamaChat("m")
    assert adapter.path == "/api/chat"
    assert adapter.body("hi", 4, 1)["messages"] == [{"role": "user", "content": "hi"}]
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert adapter.body(history, 4, 1)["messages"] == history
    chunk = adapter.parse_line(json.dumps({"message": {"role": "assistant", "content": "ok"}, "done": False}))
    assert chunk.text == "ok"


def test_llama_completion_body_applies_the_turn_template() -> None:
    body = LlamaCompletion().body("hi", 32, 3)
    assert body["prompt"] == GEMMA_TURN.format(prompt="hi")
    assert body["n_predict"] == 32 and body["temperature"] == 0 and body["stream"] is True


def test_llama_completion_sse_chunks() -> None:
    adapter = LlamaCompletion()
    assert adapter.parse_line("") is None
    assert adapter.parse_line(": keep-alive") is None
    assert adapter.parse_line("event: message") is None
    assert adapter.parse_line("data: [DONE]") is None
    chunk = adapter.parse_line('data: {"content": "ab", "stop": false}')
    assert (chunk.text, chunk.done) == ("ab", False)
    final = adapter.parse_line('data: {"content": "", "stop": true, "tokens_predicted": 9}')
    assert final.done and final.output_tokens == 9
    timings = adapter.parse_line('data: {"content": "", "stop": true, "timings": {"predicted_n": 4}}')
    assert timings.output_tokens == 4
    error = adapter.parse_line('data: {"error": {"code": 500, "message": "slot unavailable"}}')
    assert error.error == "slot unavailable"
