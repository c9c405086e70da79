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


def test_softcapped_gemma2_parity():
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from backends.testing import _loaded

    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=6,
        attn_logit_softcapping=5.0, final_logit_softcapping=10.0, max_position_embeddings=256,
        attn_implementation="eager",
    )
    model = _loaded(Gemma2ForCausalLM(cfg), 300)
    prompt = list(range(7, 27))
    want = reference_greedy(model, prompt, 6, attn_implementation="eager")
    runner = ModelRunner(model, num_blocks=16, block_size=4)
    table = list(range(16))
    hist = list(prompt)
    hist.append(runner.execute([SeqChunk(prompt, 0, table, params=GREEDY)])[0])
    for _ in range(5):
        hist.append(runner.execute([SeqChunk([hist[-1]], len(hist) - 1, table, params=GREEDY)])[0])
    assert hist[len(prompt):] == want
