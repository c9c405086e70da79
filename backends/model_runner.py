"""Runs one engine step as ONE forward pass over a flattened batch, then samples.

The scheduled sequences' new tokens are concatenated into `input_ids [1, T]` with their own
`position_ids`; the paged-attention metadata travels with the forward's keyword arguments.
transformers builds no mask (our attention name has no mask function) and no cache
(`use_cache=False`), and only the last token of each sequence that samples goes through the
LM head (`logits_to_keep` as a tensor of indices).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from backends import attention
from backends.fused_norms import fuse_rms_norms
from backends.loader import LoadedModel
from backends.lora import LoRAManager
from backends.sampling_params import SamplingParams

from backends.sampler import Logprobs, Sampler, SamplingRow
from backends.step_timer import StepTimer


@dataclass
class SeqChunk:
    """One sequence's share of a step: its new tokens and where they go."""

    token_ids: list[int]  # the tokens to compute this step
    start_pos: int  # position of token_ids[0] (= tokens already in the KV cache)
    block_table: list[int]
    window_block_table: list[int] = field(default_factory=list)  # the window KV group's, if any
    sample: bool = True  # False for a prefill chunk that does not reach the prompt's end
    params: SamplingParams = field(default_factory=SamplingParams)
    generator: torch.Generator | None = None
    token_history: list[int] = field(default_factory=list)
    constraint: Any = None  # a backends.structured.GrammarConstraint for this row's sample
    lora_slot: int = -1  # the LoRA slot whose deltas apply to these tokens; -1: the plain base


def kv_cache_shape(config, block_size: int) -> tuple[int, int, int, int]:
    """(layers, block_size, kv_heads, head_dim) of a decoder's paged cache."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, block_size, kv_heads, head_dim


def sliding_window_layers(config) -> tuple[int | None, frozenset[int]]:
    """The sliding window of a decoder's sliding-attention layers, and which layers those are."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None) or []
    layers = frozenset(i for i, t in enumerate(types) if t == "sliding_attention")
    if not isinstance(window, int) or window < 1 or not layers:
        return None, frozenset()
    return window, layers


def kv_dtype(loaded: LoadedModel) -> torch.dtype:
    """The KV cache's dtype: the loader's choice, else the model's own."""
    return loaded.kv_cache_dtype or loaded.dtype


def kv_block_bytes(config, block_size: int, dtype: torch.dtype) -> int:
    layers, bs, kv_heads, head_dim = kv_cache_shape(config, block_size)
    return 2 * layers * bs * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def _layer_devices(model: torch.nn.Module, layers: int, default: torch.device) -> list[torch.device]:
    """The device of each attention layer's weights, by `layer_idx`."""
    devices = [default] * layers
    for module in model.modules():
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int) and 0 <= idx < layers:
            param = next(module.parameters(recurse=True), None)
            if param is not None:
                devices[idx] = param.device
    return devices


class ModelRunner:
    def __init__(self, loaded: LoadedModel, num_blocks: int, block_size: int = 16,
                 loras: LoRAManager | None = None, num_window_blocks: int = 0):
        """`num_window_blocks` > 0 gives the sliding-window layers their own, smaller cache
        (the window KV group of scheduler/block_manager.py)."""
        self.loaded = loaded
        self.loras = loras
        self.model = loaded.model
        self.device = loaded.device
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.model.set_attn_implementation(attention.register())
        fuse_rms_norms(self.model)
        layers, bs, kv_heads, head_dim = kv_cache_shape(loaded.config, block_size)
        # Each layer's cache lives with that layer's weights (a split model spans devices).
        layer_devices = _layer_devices(loaded.model, layers, self.device)
        dtype = kv_dtype(loaded)
        self.window_layers = sliding_window_layers(loaded.config)[1] if num_window_blocks else frozenset()
        self.kv_caches = []
        for i, dev in enumerate(layer_devices):
            n = num_window_blocks if i in self.window_layers else num_blocks
            self.kv_caches.append((
                torch.zeros(n, bs, kv_heads, head_dim, dtype=dtype, device=dev),
                torch.zeros(n, bs, kv_heads, head_dim, dtype=dtype, device=dev),
            ))
        self.sampler = Sampler()
        self.timer = StepTimer()  # switched on by bench.profile
        text = loaded.config.get_text_config() if hasattr(loaded.config, "get_text_config") else loaded.config
        self.vocab_size = text.vocab_size  # the width of the logits the sampler sees
        # Models with several attention kinds build one mask per kind unless handed a dict.
        self._mask_arg = {t: None for t in set(getattr(text, "layer_types", None) or [])} or None

    def execute(self, chunks: list[SeqChunk]) -> list[int | None]:
        """Run one step; returns the sampled token for each chunk (None where sample=False).

        Decodes (one new token) must come before prefill chunks.
        """
        return self.execute_with_logprobs(chunks)[0]

    @torch.inference_mode()
    def execute_with_logprobs(
        self, chunks: list[SeqChunk]
    ) -> tuple[list[int | None], list[Logprobs | None]]:
        """As `execute`, plus each chunk's Logprobs where its params ask for them."""
        if not chunks:
            return [], []
        timer = self.timer
        with timer.section("metadata"):
            input_ids, keep, meta = self._prepare(chunks)
        adapted = self.loras is not None and any(c.lora_slot >= 0 for c in chunks)
        lora_step = (self.loras.step([c.lora_slot for c in chunks for _ in c.token_ids], self.device)
                     if adapted else contextlib.nullcontext())
        with lora_step, timer.section("forward"):
            logits = self._forward(input_ids, meta, keep)
        if not any(c.sample for c in chunks):
            return [None] * len(chunks), [None] * len(chunks)
        with timer.section("sample"):
            rows = [self._row(c) for c in chunks if c.sample]
            tokens, logprobs = self.sampler.sample_with_logprobs(logits.float(), rows)
            tok_it, lp_it = iter(tokens.tolist()), iter(logprobs)  # one host sync per step
        sampled = [next(tok_it) if c.sample else None for c in chunks]
        probs = [next(lp_it) if c.sample else None for c in chunks]
        return sampled, probs

    def _prepare(self, chunks: list[SeqChunk]) -> tuple[Tensor, Tensor, attention.AttentionMetadata]:
        """input_ids [1, T], the rows that reach the LM head, and the attention metadata."""
        query_lens = [len(c.token_ids) for c in chunks]
        meta = attention.build_metadata(
            self.kv_caches, query_lens,
            [c.start_pos + n for c, n in zip(chunks, query_lens)],
            [c.block_table for c in chunks], self.block_size, self.device,
            [c.window_block_table for c in chunks] if self.window_layers else None,
            self.window_layers,
        )
        input_ids = torch.tensor([list(itertools.chain.from_iterable(c.token_ids for c in chunks))])
        ends = torch.cumsum(torch.tensor(query_lens), 0) - 1
        samples = torch.tensor([c.sample for c in chunks])
        keep = ends[samples] if bool(samples.any()) else ends[-1:]
        return input_ids.to(self.device), keep.to(self.device), meta

    def _forward(self, input_ids: Tensor, meta: attention.AttentionMetadata, keep: Tensor) -> Tensor:
        out = self.model(
            input_ids=input_ids,
            position_ids=meta.positions[None],
            attention_mask=self._mask_arg,
            use_cache=False,
            logits_to_keep=keep,
            **{attention.METADATA_KWARG: meta},
        )
        return out.logits[0]

    @staticmethod
    def _row(c: SeqChunk) -> SamplingRow:
        return SamplingRow(params=c.params, generator=c.generator, token_history=c.token_history,
                           constraint=c.constraint)
