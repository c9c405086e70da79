"""The engine against its oracle, transformers `generate` with greedy decoding."""

from __future__ import annotations

import asyncio

import pytest

from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy, tiny_gemma3, tiny_llama
from registry.errors import APIError
from scheduler.engine import EngineConfig, LLMEngine

GREEDY = dict(temperature=0.0)


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, num_predict=n, **kw)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model(request):
    return tiny_llama() if request.param == "llama" else tiny_gemma3()


def make_engine(model, **kw) -> LLMEngine:
    cfg = dict(block_size=4, num_kv_blocks=64, num_ctx=256, max_num_batched_tokens=64)
    cfg.update(kw)
    return LLMEngine(model, EngineConfig(**cfg))


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 37 + i * 11) % 290 + 5 for i in range(n)]


def test_single_sequence_parity(model):
    eng = make_engine(model)
    try:
        p = prompt(1, 21)
        assert eng.generate(p, greedy(12)) == reference_greedy(model, p, 12)
        stats = eng.stats()
        assert stats.free_blocks == stats.total_blocks
    finally:
        eng.shutdown()
