"""Sentence embeddings from an encoder (BERT-like) or a decoder (causal LM) model.

One padded forward per batch of texts, pooled over the attention mask, then Ollama's
post-processing (§2.3): optional cut to `dimensions`, L2 normalization, and a refusal of NaN/Inf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from registry.errors import APIError

POOLINGS = ("mean", "cls", "last")
TOO_LONG = "the input length exceeds the context length"

# sentence-transformers' 1_Pooling/config.json flags, in the order it gives them precedence.
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
    "pooling_mode_mean_tokens": "mean",
}

_POOLING_NAMES = {"cls": "cls", "lasttoken": "last", "mean": "mean"}


@dataclass
class EmbedResult:
    embeddings: list[list[float]]
    prompt_eval_count: int  # tokens actually embedded (after truncation), summed over inputs


def pooling_from_dir(path: str | Path, default: str = "mean") -> str:
    """The pooling a sentence-transformers directory declares, or `default` when it has none."""
    path = Path(path)
    pooling_dir = path / "1_Pooling"
    modules = path / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("models.Pooling"):
                pooling_dir = path / module.get("path", "1_Pooling")
    config = pooling_dir / "config.json"
    if not config.is_file():
        return default
    flags = json.loads(config.read_text())
    mode = flags.get("pooling_mode")  # the constructor's string form, in hand-written configs
    if mode in _POOLING_NAMES:
        return _POOLING_NAMES[mode]
    for flag, pooling in _POOLING_FLAGS.items():
        if flags.get(flag):
            return pooling
    raise ValueError(f"unsupported pooling in {config}: {flags}")


def max_length_from_dir(path: str | Path, default: int) -> int:
    """sentence-transformers' `max_seq_length`, the length the model was trained to embed."""
    config = Path(path) / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length") or default)
    return default


class Embedder:
    """Embeds texts with `model` (transformers AutoModel or AutoModelForCausalLM).

    `max_length` counts tokens including the tokenizer's special tokens (CLS/SEP, BOS).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        pooling: str = "mean",
        max_length: int = 512,
        batch_size: int = 32,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        # A causal LM's head would compute vocabulary logits for every position; the base
        # model gives the final hidden states alone.
        self._encoder = getattr(model, "base_model", model)

    def embed(
        self,
        texts: list[str],
        truncate: bool = True,
        dimensions: int | None = None,
        normalize: bool = True,
    ) -> EmbedResult:
        token_ids = [self._tokenize(t, truncate) for t in texts]
        vectors: list[Tensor | None] = [None] * len(texts)
        # Batches of similar lengths waste less on padding.
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            pooled = self._forward([token_ids[i] for i in chunk])
            for i, vec in zip(chunk, pooled):
                vectors[i] = vec
        embeddings = [self._finish(v, dimensions, normalize) for v in vectors]
        return EmbedResult(embeddings, sum(len(ids) for ids in token_ids))

    def _tokenize(self, text: str, truncate: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
        if len(ids) <= self.max_length:
            return ids
        if not truncate:
            raise APIError(400, TOO_LONG)
        return self.tokenizer(
            text, add_special_tokens=True, truncation=True, max_length=self.max_length
        )["input_ids"]

    @torch.inference_mode()
    def _forward(self, batch: list[list[int]]) -> Tensor:
        device = next(self.model.parameters()).device
        width = max(len(ids) for ids in batch)
        # Right padding with a masked filler id: pads sit after every real token, so causal
        # models see the same positions as unpadded, and the filler id never matters.
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        hidden = self._encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self._pool(hidden.float(), mask).cpu()

    def _pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            last = mask.sum(dim=1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    @staticmethod
    def _finish(vector: Tensor, dimensions: int | None, normalize: bool) -> list[float]:
        if not torch.isfinite(vector).all():
            raise APIError(400, "embedding contains NaN or Inf values")
        if dimensions is not None and 0 < dimensions < vector.shape[0]:
            vector = vector[:dimensions]
        if normalize:
            vector = vector / vector.norm().clamp(min=1e-12)
        return vector.tolist()
