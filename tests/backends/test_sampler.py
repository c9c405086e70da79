"""The batched sampler: filters against hand-computed distributions, penalties, seeds, logprobs."""

from __future__ import annotations

import math

import pytest
import torch

from backends.sampler import Sampler, SamplingRow, apply_penalties
from backends.sampling_params import SamplingParams

PROBS = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]
LOGITS = torch.tensor([math.log(p) for p in PROBS])


def neutral(**overrides) -> SamplingParams:
    """Temperature 1 and every filter off, so one filter can be tested alone."""
    base = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0)
    base.update(overrides)
    return SamplingParams(**base)


def final_distribution(params: SamplingParams, logits: torch.Tensor = LOGITS) -> list[float]:
    """The distribution the sampler draws from, read back through its logprobs."""
    params.logprobs, params.top_logprobs = True, logits.shape[-1]
    _, lps = Sampler().sample_with_logprobs(logits.unsqueeze(0).clone(), [SamplingRow(params)])
    dist = [0.0] * logits.shape[-1]
    for token, lp in lps[0].top:
        dist[token] = math.exp(lp)
    return dist


def renormalized(keep: list[int], probs: list[float] = PROBS) -> list[float]:
    mass = sum(probs[i] for i in keep)
    return [probs[i] / mass if i in keep else 0.0 for i in range(len(probs))]


def assert_close(got: list[float], want: list[float]) -> None:
    assert got == pytest.approx(want, abs=1e-5)


def test_greedy_rows_take_argmax_in_a_mixed_batch():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    rows = [
        SamplingRow(SamplingParams(temperature=0.0)),
        SamplingRow(SamplingParams(temperature=1.0)),
        SamplingRow(SamplingParams(temperature=-1.0)),
        SamplingRow(SamplingParams(temperature=0.7), torch.Generator().manual_seed(3)),
        SamplingRow(SamplingParams(temperature=0.0, top_k=1, top_p=0.1)),
    ]
    tokens = Sampler().sample(logits, rows)
    want = logits.argmax(-1)
    assert tokens.dtype == torch.long and tokens.shape == (5,)
    for i in (0, 2, 4):
        assert tokens[i] == want[i]


def test_all_greedy_batch_is_argmax():
    logits = torch.randn(4, 30)
    rows = [SamplingRow(SamplingParams(temperature=0.0)) for _ in range(4)]
    assert torch.equal(Sampler().sample(logits, rows), logits.argmax(-1))


def test_temperature_alone_sharpens_by_power():
    want = [p**2 for p in PROBS]
    assert_close(final_distribution(neutral(temperature=0.5)), [w / sum(want) for w in want])
    assert_close(final_distribution(neutral(temperature=1.0)), PROBS)


def test_top_k_alone():
    assert_close(final_distribution(neutral(top_k=3)), renormalized([0, 1, 2]))
    assert_close(final_distribution(neutral(top_k=100)), PROBS)


def test_top_p_alone_keeps_smallest_prefix_reaching_p():
    # Cumulative mass 0.4, 0.65, 0.8: p=0.6 needs two tokens, p=0.7 three.
    assert_close(final_distribution(neutral(top_p=0.6)), renormalized([0, 1]))
    assert_close(final_distribution(neutral(top_p=0.7)), renormalized([0, 1, 2]))
    assert_close(final_distribution(neutral(top_p=0.01)), renormalized([0]))


def test_min_p_alone_drops_tokens_below_fraction_of_the_top():
    # Threshold 0.3 * 0.4 = 0.12.
    assert_close(final_distribution(neutral(min_p=0.3)), renormalized([0, 1, 2]))


def typical_reference(probs: list[float], mass: float) -> list[int]:
    entropy = -sum(p * math.log(p) for p in probs)
    order = sorted(range(len(probs)), key=lambda i: abs(-math.log(probs[i]) - entropy))
    keep, total = [], 0.0
    for i in order:
        keep.append(i)
        total += probs[i]
        if total > mass:
            break
    return keep


@pytest.mark.parametrize("mass", [0.2, 0.5, 0.8])
def test_typical_p_alone(mass):
    keep = typical_reference(PROBS, mass)
    assert len(keep) < len(PROBS)
    assert_close(final_distribution(neutral(typical_p=mass)), renormalized(keep))


def test_filters_chain_on_the_renormalized_distribution():
    # top_k=4 leaves [.4,.25,.15,.1]/.9; top_p=0.7 then keeps .444+.278 = .722 -> two tokens.
    assert_close(final_distribution(neutral(top_k=4, top_p=0.7)), renormalized([0, 1]))


def test_random_draws_follow_the_filtered_distribution():
    n = 4000
    logits = LOGITS.repeat(n, 1)
    rows = [SamplingRow(neutral(top_k=3)) for _ in range(n)]
    tokens = Sampler(torch.Generator().manual_seed(0)).sample(logits, rows)
    counts = torch.bincount(tokens, minlength=len(PROBS)).float() / n
    assert counts[3:].sum() == 0
    for got, want in zip(counts[:3].tolist(), renormalized([0, 1, 2])[:3]):
        assert abs(got - want) < 0.03


def test_repeat_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    row = SamplingRow(SamplingParams(repeat_penalty=2.0, repeat_last_n=64), None, [0, 1, 0])
    out = apply_penalties(logits.clone(), [row])
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]


def test_presence_and_frequency_penalties():
    logits = torch.zeros(1, 4)
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, [SamplingRow(params, None, [1, 1, 1, 2])])
    assert out.tolist() == [[0.0, -1.25, -0.75, 0.0]]


def test_penalty_window():
    history = [0, 1, 2]
    logits = torch.ones(1, 4)

    def penalized(last_n: int) -> list[float]:
        params = SamplingParams(repeat_penalty=2.0, repeat_last_n=last_n)
        return apply_penalties(logits.clone(), [SamplingRow(params, None, history)]).tolist()[0]

    assert penalized(2) == [1.0, 0.5, 0.5, 1.0]
    assert penalized(-1) == [0.5, 0.5, 0.5, 1.0]
    assert penalized(0) == [1.0, 1.0, 1.0, 1.0]


def test_penalties_are_per_row_and_change_greedy_choice():
    logits = torch.tensor([[3.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    original = logits.clone()
    rows = [
        SamplingRow(SamplingParams(temperature=0.0, repeat_penalty=2.0), None, [0]),
        SamplingRow(SamplingParams(temperature=0.0), None, [0]),
    ]
    assert Sampler().sample(logits, rows).tolist() == [1, 0]
    assert torch.equal(logits, original)


def generate(row_index: int, others: list[SamplingRow], steps: int = 20) -> list[int]:
    """Sample `steps` tokens for a seeded row placed at `row_index` among `others`."""
    vocab = 500
    torch.manual_seed(1234)
    step_logits = [torch.randn(vocab) * 3 for _ in range(steps)]
    seeded = SamplingRow(SamplingParams(seed=7), torch.Generator().manual_seed(7))
    rows = list(others)
    rows.insert(row_index, seeded)
    sampler = Sampler()
    out = []
    for logits in step_logits:
        batch = torch.randn(len(rows), vocab)
        batch[row_index] = logits
        out.append(int(sampler.sample(batch, rows)[row_index]))
    return out


def test_seeded_row_is_independent_of_batch_and_position():
    alone = generate(0, [])
    assert len(set(alone)) > 1
    mixed = [
        SamplingRow(SamplingParams(temperature=0.0)),
        SamplingRow(SamplingParams(top_k=0, top_p=1.0)),  # forces a full-vocab sort
        SamplingRow(SamplingParams(temperature=1.5, top_k=200)),
        SamplingRow(SamplingParams(seed=8), torch.Generator().manual_seed(8)),
    ]
    assert generate(0, mixed) == alone
    assert generate(2, mixed) == alone
    assert generate(4, mixed) == alone
    assert generate(1, mixed[:1]) == alone


def test_different_seeds_differ():
    logits = torch.zeros(1, 1000)

    def draws(seed: int) -> list[int]:
        row = SamplingRow(neutral(), torch.Generator().manual_seed(seed))
        return [int(Sampler().sample(logits, [row])) for _ in range(10)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


def test_logprobs_are_consistent_with_the_draw():
    torch.manual_seed(5)
    vocab = 64
    logits = torch.randn(3, vocab) * 2
    rows = [
        SamplingRow(neutral(top_k=0, logprobs=True, top_logprobs=vocab)),
        SamplingRow(SamplingParams(temperature=0.0, logprobs=True, top_logprobs=5)),
        SamplingRow(SamplingParams()),  # asks for none
    ]
    tokens, lps = Sampler(torch.Generator().manual_seed(0)).sample_with_logprobs(logits, rows)
    full, greedy, none = lps
    assert none is None
    assert sum(math.exp(lp) for _, lp in full.top) == pytest.approx(1.0, abs=1e-5)
    assert full.token_id == tokens[0]
    assert dict(full.top)[full.token_id] == pytest.approx(full.logprob)
    reference = torch.log_softmax(logits[0], -1)
    for token, lp in full.top:
        assert lp == pytest.approx(float(reference[token]), abs=1e-5)

    assert greedy.token_id == tokens[1] == logits[1].argmax()
    assert len(greedy.top) == 5 and greedy.top[0] == (greedy.token_id, greedy.logprob)
    assert [lp for _, lp in greedy.top] == sorted((lp for _, lp in greedy.top), reverse=True)
    assert greedy.logprob == pytest.approx(float(torch.log_softmax(logits[1], -1).max()))


def test_logprobs_of_a_truncated_row_cover_only_its_candidates():
    params = neutral(top_k=3, logprobs=True, top_logprobs=5)
    _, lps = Sampler().sample_with_logprobs(LOGITS.unsqueeze(0), [SamplingRow(params)])
    assert [t for t, _ in lps[0].top] == [0, 1, 2]
    assert lps[0].token_id in (0, 1, 2)


def test_row_count_mismatch_is_an_error():
    with pytest.raises(ValueError):
        Sampler().sample(torch.zeros(2, 4), [SamplingRow(SamplingParams())])


def test_extreme_parameters_still_yield_a_token():
    logits = LOGITS.unsqueeze(0).repeat(4, 1)
    rows = [
        SamplingRow(neutral(min_p=2.0)),
        SamplingRow(neutral(top_p=0.0)),
        SamplingRow(neutral(typical_p=0.0)),
        SamplingRow(neutral(temperature=1e-30)),
    ]
    tokens = Sampler().sample(logits, rows)
    assert tokens[:2].tolist() == [0, 0] and tokens[3] == 0
    assert 0 <= tokens[2] < len(PROBS)
