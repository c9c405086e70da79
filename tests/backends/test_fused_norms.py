"""backends.fused_norms: Gemma's RMSNorm as one fused op, bit for bit the same."""

from __future__ import annotations

import pytest
import torch

from backends.fused_norms import GemmaRMSNorm, fuse_rms_norms
from backends.testing import tiny_gemma3, tiny_llama


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 7, 4, 16), (3, 64)])
def test_the_fused_norm_equals_gemmas_bit_for_bit(shape, dtype):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    torch.manual_seed(0)
    norm = Gemma3RMSNorm(shape[-1], eps=1e-6)
    norm.weight.data.normal_()
    x = (torch.randn(*shape) * 3).to(dtype)
    fused = GemmaRMSNorm(norm.weight, norm.eps)
    want, got = norm(x), fused(x)
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_a_gemma_model_gets_every_norm_fused_and_the_same_logits():
    loaded = tiny_gemma3()
    model = loaded.model
    ids = torch.tensor([list(range(5, 25))])
    with torch.inference_mode():
        want = model(input_ids=ids, use_cache=False).logits
    # per layer: input, post-attention, pre- and post-feedforward, q and k; plus the final norm
    assert fuse_rms_norms(model) == 3 * 6 + 1
    assert not [m for m in model.modules() if type(m).__name__ == "Gemma3RMSNorm"]
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids, use_cache=False).logits, want)


def test_other_families_are_left_alone():
    assert fuse_rms_norms(tiny_llama().model) == 0
