"""The step's sampling in batched calls: greedy rows by one chunked argmax, random rows by one
pipeline, seeded rows unchanged by whatever shares the batch."""

from __future__ import annotations

import random

import pytest
import torch

from backends.sampler import Sampler, SamplingRow, greedy_argmax
from backends.sampling_params import SamplingParams


@pytest.mark.parametrize("vocab", [7, 1024, 2048, 5000, 262144])
def test_greedy_argmax_equals_argmax(vocab):
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(9, vocab, generator=g)
    # Ties: the first maximum wins, across chunks and into the tail.
    logits[1, :] = 0.0
    logits[2, [3, vocab - 1]] = 50.0
    logits[3, [vocab - 1]] = 60.0
    logits[4, [vocab // 2, vocab // 3]] = 70.0
    assert torch.equal(greedy_argmax(logits), logits.argmax(dim=-1))


def _rows(rng: random.Random, seeded_at: int, n: int) -> list[SamplingRow]:
    rows = []
    for i in range(n):
        if i == seeded_at:
            rows.append(SamplingRow(SamplingParams(temperature=0.8, top_k=40, seed=77),
                                    torch.Generator().manual_seed(77)))
        elif rng.random() < 0.4:
            rows.append(SamplingRow(SamplingParams(temperature=0.0)))
        elif rng.random() < 0.5:
            seed = rng.randint(0, 1000)
            rows.append(SamplingRow(SamplingParams(temperature=1.0, top_k=rng.choice([0, 5, 100]),
                                                   seed=seed), torch.Generator().manual_seed(seed)))
        else:
            rows.append(SamplingRow(SamplingParams(temperature=1.2, top_p=0.9, top_k=0)))
    return rows


def test_seeded_row_same_tokens_in_any_batch_composition():
    vocab = 3000
    g = torch.Generator().manual_seed(0)
    mine = torch.randn(vocab, generator=g)

    def draw(rng: random.Random, n: int, steps: int = 12) -> list[int]:
        at = rng.randrange(n)
        rows = _rows(rng, at, n)
        sampler = Sampler(torch.Generator().manual_seed(rng.randint(0, 99)))
        out = []
        for step in range(steps):
            logits = torch.randn(n, vocab, generator=torch.Generator().manual_seed(step + 100 * n))
            logits[at] = mine + 0.1 * step
            out.append(int(sampler.sample(logits, rows)[at]))
        return out

    alone = draw(random.Random(0), 1)
    assert len(set(alone)) > 1
    for seed in range(8):
        rng = random.Random(seed)
        assert draw(rng, rng.randint(2, 24)) == alone, seed
