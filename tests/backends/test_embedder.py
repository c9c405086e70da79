"""Embeddings: the real all-MiniLM-L6-v2 against hand-computed mean pooling, a tiny causal LM
with last-token pooling, pooling configs, truncation and dimensions."""

from __future__ import annotations

import json

import pytest
import torch

from backends.embedder import Embedder, max_length_from_dir, pooling_from_dir
from registry.errors import APIError

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply on Tuesday.",
    "Hi",
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(minilm_dir), local_files_only=True).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def embedder(minilm, minilm_dir):
    model, tokenizer = minilm
    pooling, max_length = pooling_from_dir(minilm_dir), max_length_from_dir(minilm_dir, 512)
    return Embedder(model, tokenizer, pooling, max_length)


def reference_mean_pooling(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """sentence-transformers' recipe for all-MiniLM-L6-v2, written out by hand."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_minilm_matches_hand_computed_mean_pooling(minilm, embedder):
    result = embedder.embed(SENTENCES)
    got = torch.tensor(result.embeddings)
    assert got.shape == (len(SENTENCES), 384)
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)
    assert torch.allclose(got, reference_mean_pooling(*minilm, SENTENCES), atol=1e-5)
    counts = [len(minilm[1](s)["input_ids"]) for s in SENTENCES]
    assert result.prompt_eval_count == sum(counts)


def test_related_sentences_are_closer(embedder):
    a, b, c, _ = (torch.tensor(v) for v in embedder.embed(SENTENCES).embeddings)
    assert a @ b > a @ c + 0.2


def test_batch_equals_one_by_one(embedder):
    batch = torch.tensor(embedder.embed(SENTENCES).embeddings)
    single = torch.tensor([embedder.embed([s]).embeddings[0] for s in SENTENCES])
    assert torch.allclose(batch, single, atol=1e-5)


def test_small_batches_keep_input_order(minilm, minilm_dir):
    model, tokenizer = minilm
    small = Embedder(model, tokenizer, "mean", 256, batch_size=2)
    got = torch.tensor(small.embed(SENTENCES).embeddings)
    assert torch.allclose(got, reference_mean_pooling(model, tokenizer, SENTENCES), atol=1e-5)


def test_dimensions_cut_then_renormalize(embedder):
    full = torch.tensor(embedder.embed(SENTENCES[:1]).embeddings[0])
    cut = torch.tensor(embedder.embed(SENTENCES[:1], dimensions=64).embeddings[0])
    assert cut.shape == (64,)
    assert torch.allclose(cut, full[:64] / full[:64].norm(), atol=1e-6)
    assert len(embedder.embed(SENTENCES[:1], dimensions=1000).embeddings[0]) == 384
    assert len(embedder.embed(SENTENCES[:1], dimensions=0).embeddings[0]) == 384


def test_legacy_unnormalized_vector(minilm, embedder):
    model, tokenizer = minilm
    raw = torch.tensor(embedder.embed(SENTENCES[:1], normalize=False).embeddings[0])
    enc = tokenizer(SENTENCES[:1], return_tensors="pt")
    with torch.no_grad():
        want = model(**enc).last_hidden_state.mean(dim=1)[0]
    assert torch.allclose(raw, want, atol=1e-5)
    assert abs(float(raw.norm()) - 1.0) > 1e-3


def test_overlong_input(minilm):
    model, tokenizer = minilm
    short = Embedder(model, tokenizer, "mean", max_length=8)
    text = "one two three four five six seven eight nine ten"
    with pytest.raises(APIError) as err:
        short.embed([text], truncate=False)
    assert err.value.status == 400
    assert err.value.message == "the input length exceeds the context length"
    result = short.embed([text, "hi"], truncate=True)
    assert result.prompt_eval_count == 8 + 3
    want = reference_mean_pooling(model, tokenizer, ["one two three four five six"])
    assert torch.allclose(torch.tensor(result.embeddings[0]), want[0], atol=1e-5)


def test_cls_pooling(minilm):
    model, tokenizer = minilm
    got = Embedder(model, tokenizer, "cls", 256).embed(["Hello there"], normalize=False)
    with torch.no_grad():
        want = model(**tokenizer(["Hello there"], return_tensors="pt")).last_hidden_state[0, 0]
    assert torch.allclose(torch.tensor(got.embeddings[0]), want, atol=1e-5)


def test_empty_input(embedder):
    result = embedder.embed([])
    assert result.embeddings == [] and result.prompt_eval_count == 0


def test_causal_lm_uses_last_token_pooling(minilm):
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = minilm
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128,
    )
    model = LlamaForCausalLM(config).eval()
    embedder = Embedder(model, tokenizer, "last", 64)
    batch = torch.tensor(embedder.embed(SENTENCES, normalize=False).embeddings)
    for row, text in enumerate(SENTENCES):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            want = model.model(input_ids=ids).last_hidden_state[0, -1]
        assert torch.allclose(batch[row], want, atol=1e-4)
    assert batch.shape == (len(SENTENCES), 32)


def write_pooling(tmp_path, flags: dict) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(flags))


def test_pooling_from_dir(minilm_dir, tmp_path):
    assert pooling_from_dir(minilm_dir) == "mean"
    assert pooling_from_dir(tmp_path) == "mean"
    assert pooling_from_dir(tmp_path, default="last") == "last"
    write_pooling(tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    assert pooling_from_dir(tmp_path) == "cls"


@pytest.mark.parametrize(
    "flags, want",
    [
        ({"pooling_mode_lasttoken": True}, "last"),
        ({"pooling_mode": "cls"}, "cls"),
        ({"pooling_mode": "mean"}, "mean"),
        ({"pooling_mode": "lasttoken"}, "last"),
    ],
)
def test_pooling_flags(tmp_path, flags, want):
    write_pooling(tmp_path, flags)
    assert pooling_from_dir(tmp_path) == want


def test_unsupported_pooling(tmp_path):
    write_pooling(tmp_path, {"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError):
        pooling_from_dir(tmp_path)
    with pytest.raises(ValueError):
        Embedder(None, None, "max")


def test_max_length_from_dir(minilm_dir, tmp_path):
    assert max_length_from_dir(minilm_dir, 512) == 256
    assert max_length_from_dir(tmp_path, 512) == 512
