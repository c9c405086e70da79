"""LoRA on the real gemma3:270m (float weights, as the loader converts the GGUF): the engine's
greedy tokens equal peft's `generate`, per adapter, mixed with the base in one batch, and a GGUF
LoRA of the same weights gives the same tokens."""

from __future__ import annotations

import pytest

from backends.lora import load_adapter
from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy
from scheduler.engine import EngineConfig, LLMEngine
from tests.lora.adapters import (
    VARIANTS, engine_tokens, load_gemma, make_peft, peft_files, peft_greedy, write_gguf_lora,
)

N = 8
TEXTS = ["The three primary colors are", "Why is the sky blue?", "Write a haiku about rain:",
         "The capital of France is"]


@pytest.fixture(scope="module")
def world(gemma_gguf, corral_cache, tmp_path_factory):
    lm = load_gemma(gemma_gguf, corral_cache)
    prompts = [lm.tokenizer.encode(t) for t in TEXTS]
    tmp = tmp_path_factory.mktemp("gemma-lora")
    refs = [reference_greedy(lm, prompts[0], N)]
    dirs = []
    for i, variant in enumerate(VARIANTS):
        # peft wraps the model in place; unload() gives the plain base back for the next one.
        peft_model = make_peft(lm.model, tmp / f"a{i}", seed=20 + i, scale=0.05, copy=False, **variant)
        refs.append(peft_greedy(peft_model, prompts[i + 1], N))
        lm.model = peft_model.unload()
        dirs.append(tmp / f"a{i}")
    assert all(refs[i + 1] != reference_greedy(lm, prompts[i + 1], N) for i in range(3)), \
        "an adapter left gemma's tokens unchanged"
    eng = LLMEngine(lm, EngineConfig(num_ctx=512, num_kv_blocks=128, max_num_batched_tokens=64,
                                     max_loras=4))
    yield lm, eng, prompts, refs, dirs, tmp
    eng.shutdown()


def expected(want: list[int], got: list[int]) -> list[int]:
    return want[: len(got)] if len(got) < len(want) else want  # an end-of-turn token ends early


@pytest.mark.slow
def test_gemma_base_and_three_adapters_in_one_batch(world):
    lm, eng, prompts, refs, dirs, _ = world
    for i, d in enumerate(dirs):
        eng.add_lora(load_adapter(peft_files(d), lm.model, key=f"a{i}", name=f"a{i}"))
    params = SamplingParams(temperature=0.0, num_predict=N)
    for path in ("stacked", "gather", "group"):
        eng.loras.path = path
        streams = [eng.add_request(prompts[0], params)]
        streams += [eng.add_request(prompts[i + 1], params, lora=f"a{i}") for i in range(3)]
        got = [engine_tokens(s, lm.eos_token_ids) for s in streams]
        assert got == [expected(w, g) for w, g in zip(refs, got)], path
    eng.loras.path = "auto"


@pytest.mark.slow
def test_gemma_gguf_lora_equals_its_peft_form(world):
    lm, eng, prompts, refs, dirs, tmp = world
    gguf_path = write_gguf_lora(dirs[1], tmp / "a1.gguf", "gemma3", lm.config.num_hidden_layers)
    eng.add_lora(load_adapter({"adapter.gguf": gguf_path}, lm.model, key="g1", name="g1"))
    got = engine_tokens(eng.add_request(prompts[2], SamplingParams(temperature=0.0, num_predict=N),
                                        lora="g1"), lm.eos_token_ids)
    assert got == expected(refs[2], got)
