"""The transformers `generate` baseline on the same GGUF weights: greedy, float32, in-process.

Single stream: prompts one at a time. Static batch: B prompts left-padded into one `generate`.
Throughput counts useful tokens only (up to and including each row's EOS), so the static
batch pays for rows that finished early, as static batching does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bench.adapters import GEMMA_TURN


@dataclass
class HFRow:
    mode: str  # "single" or "static batch"
    batch: int
    requests: int
    output_tokens: int
    seconds: float

    @property
    def tok_s(self) -> float | None:
        return self.output_tokens / self.seconds if self.seconds > 0 else None


def useful_tokens(new_tokens: Sequence[Sequence[int]], eos_ids: set[int]) -> int:
    """Tokens per row up to and including the first EOS; what a server would have streamed."""
    total = 0
    for row in new_tokens:
        count = 0
        for token in row:
            count += 1
            if token in eos_ids:
                break
        total += count
    return total


class HFBaseline:
    def __init__(self, gguf: Path, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        start = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        self.model.eval()
        self.load_s = time.perf_counter() - start
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.eos_ids.add(self.tokenizer.convert_tokens_to_ids("<end_of_turn>"))
        self.eos_ids.discard(None)

    def _generate(self, prompts: Sequence[str], num_predict: int, max_time: float) -> tuple[int, float]:
        texts = [GEMMA_TURN.format(prompt=p) for p in prompts]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True)
        start = time.perf_counter()
        with self.torch.inference_mode():
            output = self.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=num_predict,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.tokenizer.pad_token_id,
                max_time=max_time,
            )
        seconds = time.perf_counter() - start
        new = output[:, inputs["input_ids"].shape[1]:].tolist()
        return useful_tokens(new, self.eos_ids), seconds

    def single(self, prompts: Sequence[str], num_predict: int, time_limit_s: float) -> HFRow:
        tokens, seconds = 0, 0.0
        self._generate(prompts[:1], 2, time_limit_s)  # warm-up
        for prompt in prompts:
            if seconds >= time_limit_s:
                break
            t, s = self._generate([prompt], num_predict, time_limit_s - seconds)
            tokens, seconds = tokens + t, seconds + s
        return HFRow("single", 1, len(prompts), tokens, seconds)

    def static_batch(self, prompts: Sequence[str], num_predict: int, time_limit_s: float) -> HFRow:
        tokens, seconds = self._generate(prompts, num_predict, time_limit_s)
        return HFRow("static batch", len(prompts), len(prompts), tokens, seconds)
