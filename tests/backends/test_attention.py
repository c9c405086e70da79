"""The paged attention kernel against dense attention over the same tokens."""

from __future__ import annotations

import pytest
import torch

from backends import attention


class _Layer(torch.nn.Module):
    def __init__(self, idx: int):
        super().__init__()
        self.layer_idx = idx


def _dense(q, k, v, q_pos, k_pos, window, scale, softcap):
    """q [Hq, Lq, D], k/v [Hkv, Lk, D] for one sequence."""
    groups = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
    s = q @ k.transpose(-1, -2) * scale
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    mask = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= q_pos[:, None] - k_pos[None, :] < window
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("window,softcap", [(None, None), (5, None), (None, 30.0), (3, 20.0)])
def test_matches_dense_attention(window, softcap):
    torch.manual_seed(0)
    hq, hkv, d, bs, nblocks = 4, 2, 8, 4, 32
    kc = torch.zeros(nblocks, bs, hkv, d)
    vc = torch.zeros(nblocks, bs, hkv, d)
    # Three decodes then two prefill chunks, one of them continuing a cached context.
    past = [9, 3, 14, 0, 6]
    new = [1, 1, 1, 7, 5]
    tables = [[3, 7, 1], [0], [2, 4, 5, 6], [8, 9], [10, 11, 12]]
    # Full histories, of which `past` are already in the cache.
    hist_k = [torch.randn(p + n, hkv, d) for p, n in zip(past, new)]
    hist_v = [torch.randn(p + n, hkv, d) for p, n in zip(past, new)]
    for i, p in enumerate(past):
        for pos in range(p):
            kc[tables[i][pos // bs], pos % bs] = hist_k[i][pos]
            vc[tables[i][pos // bs], pos % bs] = hist_v[i][pos]
    q_all = [torch.randn(hq, n, d) for n in new]
    meta = attention.build_metadata(
        [(kc, vc)], new, [p + n for p, n in zip(past, new)], tables, bs, torch.device("cpu")
    )
    assert meta.num_decodes == 3
    query = torch.cat(q_all, dim=1)[None]
    key = torch.cat([h[p:].transpose(0, 1) for h, p in zip(hist_k, past)], dim=1)[None]
    value = torch.cat([h[p:].transpose(0, 1) for h, p in zip(hist_v, past)], dim=1)[None]
    out, _ = attention.paged_attention(
        _Layer(0), query, key, value, None, scaling=0.3, sliding_window=window, softcap=softcap,
        **{attention.METADATA_KWARG: meta},
    )
    assert out.shape == (1, sum(new), hq, d)
    start = 0
    for i, (p, n) in enumerate(zip(past, new)):
        want = _dense(q_all[i], hist_k[i].transpose(0, 1), hist_v[i].transpose(0, 1),
                      torch.arange(p, p + n), torch.arange(p + n), window, 0.3, softcap)
        torch.testing.assert_close(out[0, start:start + n], want.transpose(0, 1), atol=1e-5, rtol=1e-5)
        start += n
    # The new tokens' K/V were written at their slots.
    for pos in range(past[1], past[1] + new[1]):
        torch.testing.assert_close(kc[tables[1][pos // bs], pos % bs], hist_k[1][pos])


def test_missing_metadata_is_an_error():
    q = torch.zeros(1, 2, 1, 4)
    with pytest.raises(RuntimeError):
        attention.paged_attention(_Layer(0), q, q, q, None)


def test_registered_with_transformers():
    from transformers import AttentionInterface

    name = attention.register()
    assert AttentionInterface._global_mapping[name] is attention.paged_attention
