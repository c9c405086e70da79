"""Loading for placement: bitsandbytes quantization (create's `quantize`) and a split device map."""

from __future__ import annotations

import pytest
import torch

from backends.loader import LoadOptions, load_pretrained_dir
from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy, tiny_llama
from scheduler.engine import EngineConfig, LLMEngine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    tiny_llama(seed=3, layers=2).model.save_pretrained(path)
    vocab = {f"w{i}": i for i in range(300)}
    tok = Tokenizer(WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0").save_pretrained(path)
    return path


def _engine_greedy(loaded, prompt, n):
    engine = LLMEngine(loaded, EngineConfig(num_kv_blocks=64, block_size=4, num_ctx=128))
    try:
        return engine.generate(prompt, SamplingParams(temperature=0, num_predict=n))
    finally:
        engine.shutdown()


@pytest.mark.parametrize("quantize,layer_type", [("Q4_K_M", "Linear4bit"), ("q4_0", "Linear4bit"),
                                                 ("Q8_0", "Linear8bitLt")])
def test_quantized_load_runs_in_the_engine(model_dir, tmp_path, quantize, layer_type):
    loaded = load_pretrained_dir(model_dir, LoadOptions(cache_dir=tmp_path, quantize=quantize))
    proj = loaded.model.model.layers[0].mlp.up_proj
    assert type(proj).__name__ == layer_type
    full = load_pretrained_dir(model_dir, LoadOptions(cache_dir=tmp_path))
    assert loaded.model.get_memory_footprint() < 0.6 * full.model.get_memory_footprint()
    prompt = list(range(10, 30))
    expected = reference_greedy(loaded, prompt, 6, attn_implementation="eager")
    assert _engine_greedy(loaded, prompt, 6) == expected


def test_split_device_map_keeps_greedy_parity(model_dir, tmp_path):
    """The accelerate path a split placement takes (on one CPU it can only place on "cpu";
    across GPUs each layer's KV cache follows its weights, see ModelRunner)."""
    total = 64 * 1024**2
    loaded = load_pretrained_dir(model_dir, LoadOptions(cache_dir=tmp_path,
                                                        max_memory={"cpu": total}))
    prompt = list(range(40, 60))
    assert _engine_greedy(loaded, prompt, 6) == reference_greedy(loaded, prompt, 6)
    assert all(p.device == torch.device("cpu") for p in loaded.model.parameters())
