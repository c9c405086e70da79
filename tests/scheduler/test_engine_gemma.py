"""The engine on the real Gemma 3 270M (GGUF, float32): greedy tokens equal `generate`."""

from __future__ import annotations

import pytest

from backends.loader import LoadOptions, load_gguf
from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy
from scheduler.engine import EngineConfig, LLMEngine


@pytest.mark.slow
def test_gemma3_greedy_parity(gemma_gguf, tmp_path):
    lm = load_gguf(gemma_gguf, "sha256:gemma-test", LoadOptions(cache_dir=tmp_path))
    tok = lm.tokenizer
    prompts = [
        tok.encode("<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n"),
        tok.encode("The three primary colors are"),
    ]
    wants = [reference_greedy(lm, p, 12) for p in prompts]  # before the engine owns the model
    eng = LLMEngine(lm, EngineConfig(num_ctx=1024, num_kv_blocks=128, max_num_batched_tokens=16))
    try:
        params = SamplingParams(temperature=0.0, num_predict=12)
        streams = [eng.add_request(p, params) for p in prompts]
        for want, s in zip(wants, streams):
            outs = list(s)
            tokens = [t for o in outs for t in o.token_ids]
            if outs[-1].done_reason == "stop":  # an end-of-turn token ended it early
                want = want[: len(tokens)]
            assert tokens == want
            assert "".join(o.text for o in outs) == tok.decode(
                [t for t in tokens if t not in lm.eos_token_ids])
        assert eng.stats().free_blocks == eng.stats().total_blocks
    finally:
        eng.shutdown()
