"""The model runner alone: one flattened forward per step, greedy parity with `generate`."""

from __future__ import annotations

import pytest

from backends.model_runner import ModelRunner, SeqChunk, kv_block_bytes, kv_cache_shape
from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy, tiny_gemma3, tiny_llama

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model(request):
    return tiny_llama() if request.param == "llama" else tiny_gemma3()


def test_kv_shape(model):
    layers, bs, kv_heads, head_dim = kv_cache_shape(model.config, 16)
    assert layers == model.config.num_hidden_layers and bs == 16
    assert kv_block_bytes(model.config, 16, model.dtype) == 2 * layers * 16 * kv_heads * head_dim * 4


def test_two_sequences_one_forward_each_step(model):
    runner = ModelRunner(model, num_blocks=32, block_size=4)
    prompts = [list(range(5, 30)), list(range(100, 111))]
    tables = [list(range(0, 10)), list(range(31, 20, -1))]
    refs = [reference_greedy(model, p, 6) for p in prompts]
    hist = [list(p) for p in prompts]
    # Step 1: first sequence's prompt in two chunks across two steps, second whole.
    out = runner.execute([SeqChunk(prompts[0][:10], 0, tables[0], sample=False, params=GREEDY),
                          SeqChunk(prompts[1], 0, tables[1], params=GREEDY, token_history=hist[1])])
    assert out[0] is None
    hist[1].append(out[1])
    out = runner.execute([SeqChunk([hist[1][-1]], len(hist[1]) - 1, tables[1], params=GREEDY),
                          SeqChunk(prompts[0][10:], 10, tables[0], params=GREEDY)])
    hist[1].append(out[0])
    hist[0].append(out[1])
    for _ in range(5):
        chunks = [SeqChunk([h[-1]], len(h) - 1, t, params=GREEDY, token_history=h) for h, t in zip(hist, tables)]
        for h, tok in zip(hist, runner.execute(chunks)):
            h.append(tok)
    assert hist[0][len(prompts[0]):] == refs[0]
    assert hist[1][len(prompts[1]):][:6] == refs[1]
