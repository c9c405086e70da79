from __future__ import annotations

import json

import pytest

from bench.hf_baseline import HFRow, useful_tokens
from bench.metrics import PhaseStats
from bench.report import TARGETS, BenchResults, Ratio, compute_ratios, format_ratio, plot, render, to_json
from bench.scenarios import ScenarioResult


def _phase(system: str, c: int, tok_s: float | None, errors: int = 0, first_error: str | None = None,
           rss: int | None = None) -> PhaseStats:
    return PhaseStats(system=system, concurrency=c, requests=2 * c, errors=errors, output_tokens=128 * c,
                      wall_s=10.0, tok_s=tok_s, ttft_p50=0.05, ttft_p99=0.2, itl_p50=0.01, itl_p99=0.04,
                      tpot_mean=0.012, e2e_p50=0.8, first_error=first_error, peak_rss_bytes=rss)


def _results() -> BenchResults:
    return BenchResults(
        meta={"model": "gemma3:270m", "commit": "abc123"},
        phases=[_phase("corral", 1, 20.0), _phase("corral", 16, 120.0), _phase("corral", 32, 150.0, rss=3 << 29),
                _phase("llama-server", 1, 40.0),
                _phase("llama-server", 32, 100.0, errors=1, first_error="boom", rss=1 << 30)],
        hf=[HFRow("single", 1, 2, 100, 4.0), HFRow("static batch", 16, 16, 800, 10.0)],
        scenarios=[
            ScenarioResult("prefix_cache", "Prefix cache", "cold", 0.40, "warm", 0.10, "s"),
            ScenarioResult("busy_ttft", "Busy", "idle", 0.10, "busy", 0.50, "s"),
            ScenarioResult("load_time", "Load", "first", 30.0, "second", 3.0, "s"),
            ScenarioResult("structured", "Structured", "plain", None, "half", None, "tok/s", status="not supported"),
        ],
        notes=["llama-server built from 0.3.36"],
    )


def test_ratio_verdicts() -> None:
    assert Ratio("scaling", "x", 6.0).verdict == "PASS"  # the target figure itself passes
    assert Ratio("scaling", "x", 5.99).verdict == "MISS"
    assert Ratio("prefix_cache", "x", 0.5).verdict == "PASS"
    assert Ratio("prefix_cache", "x", 0.51).verdict == "MISS"
    assert Ratio("scaling", "x", None).verdict == "n/a"
    assert Ratio("structured", "x", 1.0, status="not supported").verdict == "not supported"


def test_every_target_has_an_operator_and_a_reason() -> None:
    for op, figure, why in TARGETS.values():
        assert op in (">=", "<=") and figure > 0 and why


def test_compute_ratios_from_raw_figures() -> None:
    ratios = {r.key: r for r in compute_ratios(_results(), batch=16, top=32)}
    assert ratios["single_vs_hf"].value == pytest.approx(20.0 / 25.0)
    assert ratios["single_vs_hf"].verdict == "MISS"  # 0.8x against a 1.2x target
    assert ratios["batch_vs_hf"].value == pytest.approx(120.0 / 80.0)
    assert ratios["scaling"].value == pytest.approx(6.0)
    assert ratios["vs_llama"].value == pytest.approx(1.5)
    assert ratios["vs_llama"].name == "Corral@32 / llama-server@32"
    assert ratios["single_vs_llama"].value == pytest.approx(0.5)
    assert ratios["single_vs_llama"].verdict == "MISS"
    assert ratios["memory_vs_llama"].value == pytest.approx(1.5)
    assert ratios["memory_vs_llama"].verdict == "PASS"
    assert ratios["prefix_cache"].value == pytest.approx(0.25)
    assert ratios["busy_ttft"].value == pytest.approx(5.0) and ratios["busy_ttft"].verdict == "MISS"
    assert ratios["load_time"].value == pytest.approx(10.0)  # first / second: a speedup
    assert ratios["structured"].verdict == "not supported"


def test_missing_systems_are_not_measured_rather_than_failures() -> None:
    results = BenchResults(phases=[_phase("corral", 1, 10.0)])
    ratios = {r.key: r for r in compute_ratios(results, batch=16, top=32)}
    assert ratios["vs_llama"].verdict == "not measured"
    assert ratios["single_vs_llama"].verdict == ratios["memory_vs_llama"].verdict == "not measured"
    assert ratios["single_vs_hf"].verdict == "n/a"
    assert ratios["prefix_cache"].verdict == "not measured"


def test_format_ratio_row() -> None:
    assert format_ratio(Ratio("scaling", "Corral@16 / Corral@1", 6.0)) == [
        "Corral@16 / Corral@1", "6.00×", "≥ 6×", "PASS", TARGETS["scaling"][2]]
    assert format_ratio(Ratio("prefix_cache", "warm / cold", 0.75))[1:4] == ["0.75×", "≤ 0.5×", "MISS"]
    assert format_ratio(Ratio("vs_llama", "x", None, status="not measured"))[1:4] == ["–", "≥ 1×", "not measured"]


def test_render_markdown() -> None:
    results = _results()
    text = render(results, compute_ratios(results, 16, 32))
    assert text.startswith("# Corral benchmark")
    assert "| Corral@16 / Corral@1 | 6.00× | ≥ 6× | PASS |" in text
    assert "| Peak RSS Corral@32 / llama-server@32 | 1.50× | ≤ 1.5× | PASS |" in text
    assert "| TTFT busy / idle | 5.00× | ≤ 3× | MISS |" in text
    assert "| corral | 16 | 32 | 0 | 2048 | 10.00 | 120.0 | 50.0 | 200.0 | 10.0 | 40.0 | 12.0 | – |" in text
    assert "| corral | 32 | 64 | 0 | 4096 | 10.00 | 150.0 | 50.0 | 200.0 | 10.0 | 40.0 | 12.0 | 1536 |" in text
    assert "| static batch | 16 | 800 | 10.00 | 80.0 |" in text
    assert "cold: 400.0 ms" in text and "first: 30.00 s" in text and "not supported" in text
    assert "- llama-server@32: first error: boom" in text
    assert "- llama-server built from 0.3.36" in text
    # Every table row has as many cells as its header.
    for block in text.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in rows}) <= 1, block


def test_json_dump_roundtrips() -> None:
    results = _results()
    data = json.loads(to_json(results, compute_ratios(results, 16, 32)))
    assert data["ratios"][0]["verdict"] == "MISS"  # single stream: 0.8x against 1.2x
    assert data["transformers"][1]["tok_s"] == pytest.approx(80.0)
    assert {s["key"] for s in data["scenarios"]} == {"prefix_cache", "busy_ttft", "load_time", "structured"}


def test_plot_writes_a_png(tmp_path) -> None:
    path = plot(_results(), tmp_path / "throughput.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot(BenchResults(), tmp_path / "empty.png") is None


def test_useful_tokens_stop_at_eos() -> None:
    pad, eos = 0, 1
    rows = [[5, 6, 7, 8], [5, eos, pad, pad], [eos, pad, pad, pad]]
    assert useful_tokens(rows, {eos}) == 4 + 2 + 1
