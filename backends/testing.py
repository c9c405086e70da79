"""Tiny random models for tests: built in-process in well under a second, no downloads."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from backends.loader import LoadedModel


class ByteTokenizer:
    """A stand-in tokenizer over a tiny vocab: id i decodes to chr(32 + i % 95)."""

    eos_token_id = 1
    bos_token_id = 0

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def get_vocab(self) -> dict[str, int]:
        return {f"<{i}>": i for i in range(self.vocab_size)}

    def decode(self, ids, skip_special_tokens: bool = False, **_) -> str:
        return "".join(chr(32 + i % 95) for i in ids)

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return chr(32 + ids % 95)
        return [chr(32 + i % 95) for i in ids]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) - 32 for c in text]


def device_under_test() -> torch.device:
    """Where the engine tests run: CPU in CI, `CORRAL_TEST_DEVICE=cuda` on a GPU machine (make gpu-check)."""
    return torch.device(os.environ.get("CORRAL_TEST_DEVICE") or "cpu")


def _loaded(model, vocab: int) -> LoadedModel:
    device = device_under_test()
    model.to(device).eval()
    return LoadedModel(
        model=model,
        tokenizer=ByteTokenizer(vocab),
        config=model.config,
        device=device,
        dtype=torch.float32,
        max_context=model.config.max_position_embeddings,
        eos_token_ids=[],
        kind="causal",
    )


def tiny_llama(seed: int = 0, vocab: int = 300, layers: int = 2) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        attn_implementation="sdpa",
    )
    return _loaded(LlamaForCausalLM(cfg), vocab)


def tiny_gemma3(seed: int = 0, vocab: int = 300, layers: int = 3, sliding_window: int = 8) -> LoadedModel:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        sliding_window=sliding_window, layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
        attn_implementation="sdpa",
    )
    return _loaded(Gemma3ForCausalLM(cfg), vocab)


@contextlib.contextmanager
def transformers_attention(model, implementation: str = "sdpa") -> Iterator[None]:
    """Run transformers' own attention for a while (the engine installs its paged one)."""
    saved = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(saved)


def reference_greedy(loaded: LoadedModel, prompt: list[int], max_new_tokens: int,
                     attn_implementation: str = "sdpa") -> list[int]:
    """The oracle: transformers `generate`, greedy, with transformers' own attention.

    It switches the model's attention implementation for the call, so no engine may be
    running steps on the same model meanwhile.
    """
    model = loaded.model
    with transformers_attention(model, attn_implementation), torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt], device=model.device),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=model.device),
            max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=None, pad_token_id=0,
        )
    return out[0, len(prompt):].tolist()
