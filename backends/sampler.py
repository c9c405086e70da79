"""One batched sampling pipeline with per-row parameters (Ollama/llama.cpp semantics).

Order per step: penalties over the recent-token window, then greedy rows take the argmax;
the other rows go through temperature, top_k, top_p, min_p, typical_p and an exponential race
(Gumbel-max). Every filter works on one candidate list per row, sorted by logit, that is at
most max(top_k) wide when every random row caps top_k, so the full vocabulary is sorted only
when some row disables top_k.

A row with a grammar constraint (structured output) has its logits masked to the tokens the
grammar allows before anything else, and its matcher accepts the token drawn; rows without
one are untouched, and a batch without any pays nothing.

A row with a `torch.Generator` draws its noise alone, from its own generator and with a length
that depends only on its own parameters, so a seeded request gives the same tokens whatever
else shares the batch and wherever its row sits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from backends.sampling_params import SamplingParams
from backends.structured import apply_constraints


@dataclass
class SamplingRow:
    params: SamplingParams
    generator: torch.Generator | None = None
    # The sequence's tokens so far (prompt and output, as llama.cpp's penalty window sees them).
    token_history: list[int] = field(default_factory=list)
    # A `backends.structured.GrammarConstraint`, advanced by the token sampled for this row.
    constraint: Any = None


@dataclass
class Logprobs:
    """Log-probabilities of one sampled token under the distribution it was drawn from."""

    token_id: int
    logprob: float
    # The row's `top_logprobs` most likely tokens as (token_id, logprob), most likely first.
    top: list[tuple[int, float]] = field(default_factory=list)


_ARGMAX_CHUNK = 1024


def greedy_argmax(logits: Tensor) -> Tensor:
    """`logits.argmax(-1)` (first index of the maximum), faster on CPU for wide vocabularies.

    torch's CPU argmax reduction runs ~4x slower than its vectorized `amax`, and with 32 rows
    of a 262k vocabulary it was the largest part of sampling: take each 1024-wide chunk's max,
    the first chunk holding the row's max, then the argmax inside that chunk alone.
    """
    rows, vocab = logits.shape
    n = vocab // _ARGMAX_CHUNK
    if logits.device.type != "cpu" or n < 2:
        return logits.argmax(dim=-1)
    width = n * _ARGMAX_CHUNK
    head = logits[:, :width].reshape(rows, n, _ARGMAX_CHUNK)
    best = head.amax(dim=-1).argmax(dim=-1)
    index = best * _ARGMAX_CHUNK + head[torch.arange(rows), best].argmax(dim=-1)
    if width < vocab:  # the tail past the last whole chunk wins only when strictly larger
        tail = logits[:, width:].argmax(dim=-1) + width
        larger = logits.gather(1, tail[:, None]) > logits.gather(1, index[:, None])
        index = torch.where(larger[:, 0], tail, index)
    return index


def _penalties_active(p: SamplingParams) -> bool:
    return p.repeat_last_n != 0 and (
        p.repeat_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
    )


def _window(row: SamplingRow) -> list[int]:
    n = row.params.repeat_last_n
    return row.token_history if n < 0 else row.token_history[-n:]


def apply_penalties(logits: Tensor, rows: list[SamplingRow]) -> Tensor:
    """Repeat (llama.cpp: divide positive, multiply negative), presence and frequency penalties.

    All three look at the same window: the last `repeat_last_n` tokens of the history
    (0 disables, -1 means the whole history). Returns `logits`, modified in place.
    """
    idx = [i for i, r in enumerate(rows) if _penalties_active(r.params) and _window(r)]
    if not idx:
        return logits
    windows = [_window(rows[i]) for i in idx]
    width = max(len(w) for w in windows)
    ids = torch.zeros(len(idx), width, dtype=torch.long)
    valid = torch.zeros(len(idx), width)
    for j, w in enumerate(windows):
        ids[j, : len(w)] = torch.tensor(w, dtype=torch.long)
        valid[j, : len(w)] = 1.0
    device = logits.device
    ids, valid = ids.to(device), valid.to(device)
    counts = torch.zeros(len(idx), logits.shape[1], device=device)
    counts.scatter_add_(1, ids, valid)
    present = counts > 0

    def col(name: str) -> Tensor:
        vals = [float(getattr(rows[i].params, name)) for i in idx]
        return torch.tensor(vals, device=device).unsqueeze(1)

    rep, pres, freq = col("repeat_penalty"), col("presence_penalty"), col("frequency_penalty")
    sub = logits[idx]
    repeated = torch.where(sub > 0, sub / rep, sub * rep)
    sub = torch.where(present, repeated, sub)
    sub = sub - counts * freq - present.float() * pres
    logits[idx] = sub
    return logits


class Sampler:
    """Turns a step's logits into one token per row.

    `generator` is the shared generator of unseeded rows (None: torch's global RNG).
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def sample(self, logits: Tensor, rows: list[SamplingRow]) -> Tensor:
        tokens, _ = self.sample_with_logprobs(logits, rows)
        return tokens

    @torch.inference_mode()
    def sample_with_logprobs(
        self, logits: Tensor, rows: list[SamplingRow]
    ) -> tuple[Tensor, list[Logprobs | None]]:
        """Tokens [N] (long) and, for each row whose params ask for logprobs, its Logprobs.

        Logprobs come from the final distribution the row was drawn from: for a greedy row
        the softmax of the penalized logits; for a random row the distribution left after
        temperature and the truncation filters (tokens outside it have no entry).
        """
        if logits.shape[0] != len(rows):
            raise ValueError(f"{logits.shape[0]} logit rows for {len(rows)} sampling rows")
        constraints = [r.constraint for r in rows]
        if not any(c is not None for c in constraints):
            return self._sample(logits, rows)
        logits = apply_constraints(logits.float().clone(), constraints)
        tokens, logprobs = self._sample(logits, rows)
        chosen = tokens.tolist()
        for c, t in zip(constraints, chosen):
            if c is not None:
                c.accept(t)
        return tokens, logprobs

    def _sample(
        self, logits: Tensor, rows: list[SamplingRow]
    ) -> tuple[Tensor, list[Logprobs | None]]:
        want_logprobs = any(r.params.logprobs for r in rows)
        needs_penalty = any(_penalties_active(r.params) for r in rows)
        if all(r.params.greedy for r in rows) and not needs_penalty and not want_logprobs:
            return greedy_argmax(logits), [None] * len(rows)

        logits = logits.float().clone()
        apply_penalties(logits, rows)
        tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        logprobs: list[Logprobs | None] = [None] * len(rows)

        greedy = [i for i, r in enumerate(rows) if r.params.greedy]
        if greedy:
            g_logits = logits[greedy]
            g_tokens = greedy_argmax(g_logits)
            tokens[greedy] = g_tokens
            if want_logprobs:
                g_lp = torch.log_softmax(g_logits, dim=-1)
                for j, i in enumerate(greedy):
                    if rows[i].params.logprobs:
                        logprobs[i] = _row_logprobs(
                            rows[i].params, g_lp[j], None, int(g_tokens[j])
                        )

        rand = [i for i, r in enumerate(rows) if not r.params.greedy]
        if rand:
            self._sample_random(logits[rand], [rows[i] for i in rand], rand, tokens, logprobs)
        return tokens, logprobs

    def _sample_random(
        self,
        logits: Tensor,
        rows: list[SamplingRow],
        positions: list[int],
        tokens: Tensor,
        logprobs: list[Logprobs | None],
    ) -> None:
        device, vocab = logits.device, logits.shape[1]
        temps = torch.tensor([r.params.temperature for r in rows], device=device)
        # A vanishing temperature would overflow the logits to inf and the softmax to NaN.
        logits = logits / temps.clamp(min=1e-5).unsqueeze(1)

        row_k = [_effective_top_k(r.params, vocab) for r in rows]
        width = max(row_k)
        if width < vocab:
            values, cand_ids = torch.topk(logits, width, dim=-1)
        else:
            values, cand_ids = torch.sort(logits, dim=-1, descending=True)
        rank = torch.arange(width, device=device)
        k = torch.tensor(row_k, device=device).unsqueeze(1)
        values = values.masked_fill(rank >= k, float("-inf"))

        values = _top_p(values, [r.params.top_p for r in rows])
        values = _min_p(values, [r.params.min_p for r in rows])
        values = _typical_p(values, [r.params.typical_p for r in rows])

        final_lp = torch.log_softmax(values, dim=-1)
        probs = final_lp.exp()
        noise = self._exponential_noise(rows, row_k, width, device)
        choice = (probs / noise).argmax(dim=-1)
        chosen = cand_ids.gather(1, choice.unsqueeze(1)).squeeze(1)
        tokens[positions] = chosen
        for j, i in enumerate(positions):
            if rows[j].params.logprobs:
                logprobs[i] = _row_logprobs(
                    rows[j].params, final_lp[j], cand_ids[j], int(choice[j])
                )

    def _exponential_noise(
        self, rows: list[SamplingRow], row_k: list[int], width: int, device: torch.device
    ) -> Tensor:
        # Candidates past a row's own top_k are already masked, so noise of 1 there is inert;
        # a seeded row's draw thus has the same length whatever the batch's widest row is.
        noise = torch.ones(len(rows), width, device=device)
        shared = [j for j, r in enumerate(rows) if r.generator is None]
        if shared:
            gen = self.generator
            block = torch.empty(len(shared), width, device=gen.device if gen else device)
            noise[shared] = block.exponential_(generator=gen).to(device)
        for j, r in enumerate(rows):
            if r.generator is not None:
                own = torch.empty(row_k[j], device=r.generator.device)
                noise[j, : row_k[j]] = own.exponential_(generator=r.generator).to(device)
        # An exact 0 draw would make a masked candidate 0/0 = NaN, which argmax picks.
        return noise.clamp_(min=1e-20)


def _effective_top_k(p: SamplingParams, vocab: int) -> int:
    return vocab if p.top_k <= 0 else min(p.top_k, vocab)


def _top_p(values: Tensor, top_p: list[float]) -> Tensor:
    """Keep the smallest prefix of the sorted candidates whose probability reaches top_p."""
    if all(p >= 1.0 for p in top_p):
        return values
    p = torch.tensor(top_p, device=values.device).unsqueeze(1)
    probs = torch.softmax(values, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs
    drop = before >= p
    drop[:, 0] = False
    return values.masked_fill(drop, float("-inf"))


def _min_p(values: Tensor, min_p: list[float]) -> Tensor:
    """Drop candidates less likely than min_p times the most likely one."""
    if all(m <= 0.0 for m in min_p):
        return values
    m = torch.tensor(min_p, device=values.device).unsqueeze(1)
    probs = torch.softmax(values, dim=-1)
    drop = probs < m * probs[:, :1]
    drop[:, 0] = False  # min_p above 1 still leaves the top token
    return values.masked_fill(drop, float("-inf"))


def _typical_p(values: Tensor, typical_p: list[float]) -> Tensor:
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy
    until their mass reaches typical_p (llama.cpp's rule, at least one token kept)."""
    if all(t >= 1.0 for t in typical_p):
        return values
    t = torch.tensor(typical_p, device=values.device).unsqueeze(1)
    logp = torch.log_softmax(values, dim=-1)
    probs = logp.exp()
    alive = probs > 0
    entropy = -torch.where(alive, probs * logp, torch.zeros_like(probs)).sum(-1, keepdim=True)
    distance = torch.where(alive, (-logp - entropy).abs(), torch.full_like(probs, float("inf")))
    order = torch.argsort(distance, dim=-1, stable=True)
    ordered = probs.gather(1, order)
    before = torch.cumsum(ordered, dim=-1) - ordered
    drop_ordered = before > t
    drop_ordered[:, 0] = False
    drop = torch.zeros_like(drop_ordered).scatter(1, order, drop_ordered)
    drop = drop & (t < 1.0)
    return values.masked_fill(drop, float("-inf"))


def _row_logprobs(
    params: SamplingParams, logp: Tensor, cand_ids: Tensor | None, chosen: int
) -> Logprobs:
    """`logp` is one row's final log-distribution, over candidates `cand_ids` (None: vocab);
    `chosen` indexes into it."""
    n = min(max(params.top_logprobs, 0), logp.shape[0])
    top: list[tuple[int, float]] = []
    if n:
        top_lp, top_idx = torch.topk(logp, n)
        ids = top_idx if cand_ids is None else cand_ids[top_idx]
        top = [
            (int(t), float(v))
            for t, v in zip(ids.tolist(), top_lp.tolist())
            if v != float("-inf")
        ]
    token_id = chosen if cand_ids is None else int(cand_ids[chosen])
    return Logprobs(token_id=token_id, logprob=float(logp[chosen]), top=top)
