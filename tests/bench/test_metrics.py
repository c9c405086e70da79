from __future__ import annotations

import pytest

from bench.metrics import PhaseStats, RequestRecord, gaps, median, percentile, tokens_per_second


def test_percentile_interpolates_like_numpy() -> None:
    data = [4.0, 1.0, 3.0, 2.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 4.0
    assert percentile(data, 50) == pytest.approx(2.5)
    # numpy.percentile([1, 2, 3, 4], 99) == 3.97
    assert percentile(data, 99) == pytest.approx(3.97)
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_itl_from_chunk_timestamps() -> None:
    assert gaps([10.0, 10.1, 10.3, 10.6]) == pytest.approx([0.1, 0.2, 0.3])
    assert gaps([1.0]) == []
    record = RequestRecord(start=9.5, token_times=[10.0, 10.1, 10.3, 10.6], end=10.7, output_tokens=4)
    assert record.ttft == pytest.approx(0.5)
    assert record.itls == pytest.approx([0.1, 0.2, 0.3])
    assert record.e2e == pytest.approx(1.2)
    assert record.tpot == pytest.approx((1.2 - 0.5) / 3)


def test_token_count_prefers_the_server_count() -> None:
    record = RequestRecord(start=0.0, token_times=[1.0, 2.0], end=3.0)
    assert record.tokens == 2
    record.output_tokens = 5  # chunks may carry several tokens, or none (held-back stop prefixes)
    assert record.tokens == 5


def test_tokens_per_second() -> None:
    assert tokens_per_second(100, 4.0) == 25.0
    assert tokens_per_second(100, 0.0) is None


def test_phase_stats_aggregate_only_completed_requests() -> None:
    ok1 = RequestRecord(start=0.0, token_times=[0.2, 0.3, 0.4], end=0.5, output_tokens=3)
    ok2 = RequestRecord(start=0.0, token_times=[0.4, 0.6], end=0.7, output_tokens=2)
    failed = RequestRecord(start=0.0, token_times=[0.1], end=0.2, error="HTTP 500: boom")
    stats = PhaseStats.from_records("corral", 2, [ok1, ok2, failed], wall_s=1.0)
    assert stats.requests == 3
    assert stats.errors == 1
    assert stats.first_error == "HTTP 500: boom"
    assert stats.output_tokens == 5
    assert stats.tok_s == pytest.approx(5.0)
    assert stats.ttft_p50 == pytest.approx(0.3)
    assert stats.itl_p50 == pytest.approx(0.1)  # gaps 0.1, 0.1, 0.2
    assert stats.itl_p99 == pytest.approx(0.198)
    assert stats.tpot_mean == pytest.approx(((0.5 - 0.2) / 2 + (0.7 - 0.4) / 1) / 2)


def test_phase_stats_with_nothing_completed() -> None:
    stats = PhaseStats.from_records("x", 1, [], wall_s=0.0)
    assert stats.tok_s is None and stats.ttft_p50 is None and stats.errors == 0


def test_median_skips_missing() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
