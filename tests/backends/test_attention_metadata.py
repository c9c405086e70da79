"""The vectorized step metadata equals the per-sequence construction it replaced."""

from __future__ import annotations

import random

import pytest
import torch

from backends import attention


def _ref_slots(table: list[int], first: int, last: int, bs: int) -> list[int]:
    return [table[p // bs] * bs + p % bs for p in range(first, last)]


def _ref_first(ctx: int, q: int, window: int | None) -> int:
    return 0 if window is None else max(0, ctx - q - window + 1)


def _batch(rng: random.Random, bs: int):
    """Decodes first, then prefill chunks (some continuing a cached context)."""
    n_dec, n_pre = rng.randint(0, 6), rng.randint(0, 3)
    if n_dec + n_pre == 0:
        n_dec = 1
    q_lens, ctx_lens = [], []
    for i in range(n_dec + n_pre):
        q = 1 if i < n_dec else rng.randint(2, 20)
        past = rng.choice([0, rng.randint(1, 40)]) if i >= n_dec else rng.randint(0, 40)
        q_lens.append(q)
        ctx_lens.append(past + q)
    free = list(range(200))
    rng.shuffle(free)
    tables = [[free.pop() for _ in range((c + bs - 1) // bs)] for c in ctx_lens]
    return q_lens, ctx_lens, tables


@pytest.mark.parametrize("seed", range(25))
def test_metadata_equals_per_sequence_reference(seed):
    rng = random.Random(seed)
    bs = rng.choice([1, 4, 16])
    q_lens, ctx_lens, tables = _batch(rng, bs)
    meta = attention.build_metadata([], q_lens, ctx_lens, tables, bs, torch.device("cpu"))
    want_slots, want_pos = [], []
    for q, ctx, table in zip(q_lens, ctx_lens, tables):
        want_slots += _ref_slots(table, ctx - q, ctx, bs)
        want_pos += list(range(ctx - q, ctx))
    assert meta.slot_mapping.tolist() == want_slots
    assert meta.positions.tolist() == want_pos
    n_dec = next((i for i, q in enumerate(q_lens) if q != 1), len(q_lens))
    assert meta.num_decodes == n_dec
    for window in (None, 3, 10):
        lay = meta.layout(window)
        eff = None if window is not None and window >= max(ctx_lens) else window
        if n_dec:
            blocks = lay.decode_blocks
            slots = (blocks[:, :, None] * bs + torch.arange(bs)).reshape(blocks.shape[0], -1)
            slots = slots[:, :lay.decode_width]
            valid = (lay.decode_mask.reshape(slots.shape) if lay.decode_mask is not None
                     else torch.ones_like(slots, dtype=torch.bool))
            for i in range(n_dec):
                first = _ref_first(ctx_lens[i], 1, eff)
                assert slots[i][valid[i]].tolist() == _ref_slots(tables[i], first, ctx_lens[i], bs)
        for j, (start, end, slots, _) in enumerate(lay.prefills):
            i = n_dec + j
            assert end - start == q_lens[i]
            first = _ref_first(ctx_lens[i], q_lens[i], eff)
            assert slots.tolist() == _ref_slots(tables[i], first, ctx_lens[i], bs)
