"""A half-precision KV cache: half the bytes, and greedy tokens that don't depend on the batch.

bf16 K/V are not token-exact against float32 `generate` (each cached value is rounded), so the
engine is checked against itself: every prompt alone, then all of them batched, staggered and
chunked, must give the same tokens; and against the float32 cache, top-1 agreement stays high.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from backends.sampling_params import SamplingParams
from backends.testing import tiny_gemma3, tiny_llama
from scheduler.engine import EngineConfig, LLMEngine
from scheduler.instances import InstanceConfig, InstanceFactory, kv_cache_dtype
from serve.settings import Settings

GREEDY = SamplingParams(temperature=0.0, num_predict=16)
NEXT = SamplingParams(temperature=0.0, num_predict=1)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model(request):
    base = tiny_llama() if request.param == "llama" else tiny_gemma3()
    return dataclasses.replace(base, kv_cache_dtype=torch.bfloat16)


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 37 + i * 11) % 290 + 5 for i in range(n)]


def engine(model, **kw) -> LLMEngine:
    cfg = dict(block_size=4, num_kv_blocks=96, num_ctx=256, max_num_batched_tokens=64)
    cfg.update(kw)
    return LLMEngine(model, EngineConfig(**cfg), start=False)


def run(eng: LLMEngine, prompts: list[list[int]], stagger: int = 0,
        params: SamplingParams = GREEDY) -> list[list[int]]:
    streams = []
    for p in prompts:
        streams.append(eng.add_request(p, params))
        for _ in range(stagger):
            eng.step()
    for _ in range(2000):
        eng.step()
        if not eng.scheduler.has_work() and eng._commands.empty():
            break
    return [[t for out in s for t in out.token_ids] for s in streams]


def test_cache_is_bf16_and_half_the_bytes(model):
    fp32 = dataclasses.replace(model, kv_cache_dtype=None)
    budget = 1 << 20
    half, full = engine(model, num_kv_blocks=None, kv_memory_bytes=budget), \
        engine(fp32, num_kv_blocks=None, kv_memory_bytes=budget)
    assert half.runner.kv_caches[0][0].dtype == torch.bfloat16
    assert full.runner.kv_caches[0][0].dtype == torch.float32
    # The same byte budget holds twice the blocks; the same blocks take half the bytes.
    assert half.block_manager.num_blocks // 2 == full.block_manager.num_blocks  # floor division

    def nbytes(e):
        return sum(k.nbytes + v.nbytes for k, v in e.runner.kv_caches)
    assert 2 * nbytes(engine(model)) == nbytes(engine(fp32))


def test_bf16_greedy_is_independent_of_the_batch(model):
    prompts = [prompt(s, n) for s, n in [(2, 9), (3, 23), (4, 5), (5, 14), (6, 30), (7, 3)]]
    alone = [run(engine(model), [p])[0] for p in prompts]
    assert all(len(t) == 16 for t in alone)
    assert run(engine(model), prompts) == alone  # all at once
    assert run(engine(model, max_num_batched_tokens=8), prompts, stagger=2) == alone  # chunked


def test_bf16_top1_agrees_with_float32(model):
    """8 prompts, every 4th of 16 steps, teacher-forced on the float32 tokens: top-1 agreement
    (32/32 measured here; 90% leaves room for another CPU's rounding)."""
    fp32 = dataclasses.replace(model, kv_cache_dtype=None)
    prompts = [prompt(s, 12 + s) for s in range(8)]
    want = run(engine(fp32), prompts)
    agree = total = 0
    eng = engine(model)
    for p, w in zip(prompts, want):
        # Greedy on prompt + the float32 continuation's prefix: the next token per step.
        for k in range(0, len(w), 4):
            got = run(eng, [p + w[:k]], params=NEXT)[0][0]
            agree += got == w[k]
            total += 1
    assert agree / total >= 0.9, f"top-1 agreement {agree}/{total}"


def test_kv_cache_type_setting(caplog):
    assert Settings.from_env({"OLLAMA_KV_CACHE_TYPE": "Q8_0"}).kv_cache_type == "q8_0"
    assert Settings.from_env({}).kv_cache_type == ""
    cpu = torch.device("cpu")
    assert kv_cache_dtype("f16", cpu) == torch.bfloat16
    assert kv_cache_dtype("q4_0", cpu) == torch.bfloat16
    assert kv_cache_dtype("", cpu) is None and kv_cache_dtype("f32", cpu) is None
    with caplog.at_level(logging.WARNING, logger="corral.scheduler"):
        InstanceFactory(InstanceConfig(cache_dir=".", kv_cache_type="q8_0"))
        InstanceFactory(InstanceConfig(cache_dir=".", kv_cache_type="f16"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not implemented" in lines[0], lines
