"""A request as the engine sees it: tokens, progress through the KV cache, and its outputs."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from backends.sampling_params import SamplingParams

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    prompt_token_ids: list[int]
    params: SamplingParams
    request_id: str = ""
    # Prompt and output tokens (after a context shift: the kept ones); the model's input.
    token_ids: list[int] = field(default_factory=list)
    num_prompt_tokens: int = 0
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_prompt_tokens: int = 0  # prefix-cache hit at admission
    num_prefix_query_tokens: int = 0  # tokens looked up in the prefix cache at admission
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    window_block_table: list[int] = field(default_factory=list)  # sliding layers' blocks, if any
    generator: torch.Generator | None = None
    detokenizer: Any = None
    constraint: Any = None  # a GrammarConstraint: fed only sampled tokens, kept across recomputes
    stream: Any = None  # the RequestStream that receives this sequence's outputs
    num_ctx: int = 0
    num_keep: int = 0
    finish_reason: str | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_scheduled_ns: int = 0
    first_token_ns: int = 0
    arrival_ns: int = field(default_factory=time.perf_counter_ns)
    last_token_ns: int = 0
    inter_token_ns: list[int] = field(default_factory=list)  # gaps between output tokens
    num_preemptions: int = 0
    lora_key: str | None = None  # the adapter whose deltas apply (None: the plain base)
    lora_slot: int = -1
    cache_salt: bytes = b""  # seeds the prefix-cache hash chain (the adapter, when there is one)
    seq_id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)
        self.num_prompt_tokens = len(self.prompt_token_ids)
        if not self.request_id:
            self.request_id = f"seq-{self.seq_id}"
        if self.generator is None and self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_new_tokens(self) -> int:
        """Tokens not yet in the KV cache."""
        return self.num_tokens - self.num_computed_tokens

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        self.output_token_ids.append(token_id)
