"""LoRA in the engine against peft's own `generate`, on a tiny random Llama.

Adapters are made by peft with random (non-zero) B, so each changes the tokens; the engine runs
them over one shared base, alone and mixed with the plain base in one batch, on every delta path.
"""

from __future__ import annotations

import pytest
import torch

from backends.lora import LoRAManager, load_adapter
from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy, tiny_llama
from scheduler.engine import EngineConfig, LLMEngine
from tests.lora.adapters import VARIANTS, make_peft, peft_files, peft_greedy, write_gguf_lora

N = 10
PROMPTS = [[(7 * s + 13 * i) % 290 + 5 for i in range(9 + 4 * s)] for s in range(4)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The base, three peft adapters saved to disk, and every reference token list."""
    base = tiny_llama(seed=3)
    tmp = tmp_path_factory.mktemp("lora")
    adapters = []
    for i, variant in enumerate(VARIANTS):
        directory = tmp / f"a{i}"
        peft_model = make_peft(base.model, directory, seed=10 + i, **variant)
        adapters.append((directory, peft_greedy(peft_model, PROMPTS[i + 1], N)))
    base_ref = reference_greedy(base, PROMPTS[0], N)
    return base, adapters, base_ref


def engine(base, path: str, start: bool = True) -> LLMEngine:
    cfg = EngineConfig(block_size=4, num_kv_blocks=128, num_ctx=256, max_num_batched_tokens=64,
                       max_loras=4, lora_path=path)
    return LLMEngine(base, cfg, start=start)


def add(eng: LLMEngine, files, key: str) -> None:
    eng.add_lora(load_adapter(files, eng.loaded.model, key=key, name=key))


def greedy() -> SamplingParams:
    return SamplingParams(temperature=0.0, num_predict=N)


def test_adapters_change_the_output(world):
    _, adapters, base_ref = world
    for (_, ref), prompt in zip(adapters, PROMPTS[1:]):
        assert ref != reference_greedy(world[0], prompt, N), "an adapter left the tokens as the base's"


@pytest.mark.parametrize("path", ["stacked", "gather", "group", "auto"])
def test_mixed_batch_equals_each_alone(world, path):
    """Base + three adapters in one batch: each row gets its own reference tokens."""
    base, adapters, base_ref = world
    eng = engine(base, path, start=False)
    try:
        for i, (directory, _) in enumerate(adapters):
            add(eng, peft_files(directory), f"a{i}")
        streams = [eng.add_request(PROMPTS[0], greedy())]
        streams += [eng.add_request(PROMPTS[i + 1], greedy(), lora=f"a{i}") for i in range(3)]
        eng.start()  # every request is queued before the first step: one mixed batch
        got = [[t for out in s for t in out.token_ids] for s in streams]
        assert got == [base_ref] + [ref for _, ref in adapters]
    finally:
        eng.shutdown()


def test_each_adapter_alone_and_base_untouched(world):
    base, adapters, base_ref = world
    eng = engine(base, "auto")
    try:
        for i, (directory, _) in enumerate(adapters):
            add(eng, peft_files(directory), f"a{i}")
        for i, (_, ref) in enumerate(adapters):
            tokens = [t for out in eng.add_request(PROMPTS[i + 1], greedy(), lora=f"a{i}")
                      for t in out.token_ids]
            assert tokens == ref, f"adapter a{i}"
        # The same prompt without the adapter must not hit the adapter's prefix cache.
        assert eng.generate(PROMPTS[1], greedy()) == reference_greedy(base, PROMPTS[1], N)
        eng.remove_lora("a1")
        assert eng.loras.slot_of("a1") is None
        assert eng.generate(PROMPTS[0], greedy()) == base_ref
    finally:
        eng.shutdown()


def test_gguf_lora_equals_its_peft_form(world, tmp_path):
    base, adapters, _ = world
    text = base.config
    directory, ref = adapters[1]  # all seven projections, rsLoRA
    gguf_path = write_gguf_lora(directory, tmp_path / "lora.gguf", "llama", text.num_hidden_layers,
                                heads=(text.num_attention_heads, text.num_key_value_heads))
    eng = engine(base, "auto")
    try:
        add(eng, {"adapter.gguf": gguf_path}, "g")
        tokens = [t for out in eng.add_request(PROMPTS[2], greedy(), lora="g") for t in out.token_ids]
        assert tokens == ref
    finally:
        eng.shutdown()


def test_slots_are_bounded_and_reused(world):
    base, adapters, _ = world
    model = tiny_llama(seed=3).model
    manager = LoRAManager(model, max_loras=2)
    w = [load_adapter(peft_files(d), model, key=f"a{i}", name=f"a{i}") for i, (d, _) in enumerate(adapters)]
    assert manager.add(w[0]) == 0 and manager.add(w[1]) == 1
    with pytest.raises(ValueError, match="slots are taken"):
        manager.add(w[2])
    manager.remove(w[0].key)
    assert manager.add(w[2]) == 0
    assert torch.equal(w[2].modules["model.layers.0.self_attn.o_proj"].A,
                       manager._layers["model.layers.0.self_attn.o_proj"].slots[0][0])
