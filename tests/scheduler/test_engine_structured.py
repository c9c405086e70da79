"""Structured output through the engine: constrained sequences batched with free ones."""

from __future__ import annotations

import dataclasses
import json

import pytest

from backends.sampling_params import SamplingParams
from backends.structured import parse_format
from backends.testing import reference_greedy, tiny_llama
from scheduler.engine import EngineConfig, LLMEngine

EOS = 1  # ByteTokenizer's eos id
SCHEMA = {"type": "object",
          "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green"]}},
          "required": ["ok", "color"]}
# Long enough to cross a small num_ctx, finite whatever the model prefers.
LONG = {"type": "object",
        "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green"]},
                                  "minItems": 10, "maxItems": 10}},
        "required": ["colors"]}


@pytest.fixture(scope="module")
def model():
    return dataclasses.replace(tiny_llama(), eos_token_ids=[EOS])


def make_engine(model, **kw) -> LLMEngine:
    cfg = dict(block_size=4, num_kv_blocks=64, num_ctx=256, max_num_batched_tokens=64)
    cfg.update(kw)
    return LLMEngine(model, EngineConfig(**cfg))


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 37 + i * 11) % 290 + 5 for i in range(n)]


def constrained(fmt, n: int = 200) -> SamplingParams:
    return SamplingParams(temperature=0.0, num_predict=n, format=parse_format(fmt))


def collect(stream) -> tuple[str, list[int], str]:
    outs = list(stream)
    return ("".join(o.text for o in outs), [t for o in outs for t in o.token_ids],
            outs[-1].done_reason)


def test_constrained_and_free_sequences_share_batches(model):
    eng = make_engine(model, max_num_batched_tokens=16)
    try:
        free_prompts = [prompt(s, n) for s, n in [(2, 9), (3, 23), (4, 5)]]
        wants = [reference_greedy(model, p, 10) for p in free_prompts]
        streams = []
        for i, p in enumerate(free_prompts):
            streams.append(eng.add_request(p, SamplingParams(temperature=0.0, num_predict=10)))
            fmt = SCHEMA if i % 2 else "json"
            streams.append(eng.add_request(prompt(10 + i, 7 + i), constrained(fmt)))
        for i, s in enumerate(streams):
            text, tokens, reason = collect(s)
            if i % 2 == 0:  # free: the tokens an unconstrained run gives (greedy parity)
                want = wants[i // 2]
                assert tokens == (want[: len(tokens)] if reason == "stop" else want)
            else:
                assert reason == "stop" and tokens[-1] == EOS
                obj = json.loads(text)
                assert isinstance(obj, dict)
                if i // 2 % 2:
                    assert set(obj) == {"ok", "color"} and obj["color"] in ("red", "green")
        assert eng.stats().free_blocks == eng.stats().total_blocks
    finally:
        eng.shutdown()


def test_one_compile_per_format(model):
    eng = make_engine(model)
    try:
        for _ in range(3):
            collect(eng.add_request(prompt(1, 5), constrained(SCHEMA)))
        assert eng.grammars.num_compiles == 1
    finally:
        eng.shutdown()


def test_preemption_recompute_does_not_refeed_the_matcher(model):
    p = prompt(7, 12)
    eng = make_engine(model)
    try:
        want = collect(eng.add_request(p, constrained(LONG)))
    finally:
        eng.shutdown()
    # Few blocks: sequences preempt each other and are prefilled again mid-output.
    eng = make_engine(model, num_kv_blocks=28, max_num_batched_tokens=24, num_ctx=112)
    try:
        streams = [eng.add_request(p, constrained(LONG)) for _ in range(3)]
        results = [collect(s) for s in streams]
        assert eng.stats().num_preemptions > 0
    finally:
        eng.shutdown()
    for got in results:
        assert got == want
    assert len(json.loads(want[0])["colors"]) == 10


def test_context_shift_keeps_the_matcher_state(model):
    eng = make_engine(model, num_ctx=48)
    try:
        text, tokens, reason = collect(eng.add_request(prompt(8, 20), constrained(LONG)))
    finally:
        eng.shutdown()
    assert len(tokens) > 48 - 20  # the output crossed num_ctx at least once
    assert reason == "stop"
    assert len(json.loads(text)["colors"]) == 10
